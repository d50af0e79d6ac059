"""The docs cannot rot: every ```sh runnable block of README.md and docs/ runs, in the order the
pages give them, in one working directory holding `photos/` (the digits as class folders); every
page is linked from README; README stays a front page."""

import os
import re
import shutil
import subprocess

import pytest

from mobilenet_tf.data.digits import materialize

from clis import REPO, env_for, runnable_blocks

# Blocks another test runs as written, asserting their numbers too: not run twice.
RUN_ELSEWHERE = {"docs/quantization.md": "test_qat_recipe.py::test_digits_recipe_qat_int8_matches_float"}
PAGES = ["README.md", "docs/weights.md", "docs/python.md", "docs/training.md", "docs/data.md", "docs/quantization.md", "docs/serving.md",
         "docs/performance.md", "docs/architecture.md", "docs/slurm.md", "docs/kubernetes.md"]
# A demo command serves until stopped: run it in the background, wait for its page, stop it.
DEMO = r'''mobilenet-demo() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  command mobilenet-demo "$@" --port=$port > demo.log 2>&1 &
  local pid=$!
  for _ in $(seq 120); do grep -q "^Serving" demo.log && break; kill -0 $pid || break; sleep 1; done
  grep "^Serving" demo.log && curl -sf "$(sed -n 's/^Serving .* at \(http[^ ]*\).*/\1/p' demo.log)" > /dev/null
  local ok=$?
  kill -TERM $pid; wait $pid
  return $ok
}
'''


def test_readme_is_a_front_page_linking_every_page():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 150
    for page in PAGES[1:]:
        assert f"({page})" in readme, page
    for page in os.listdir(os.path.join(REPO, "docs")):
        if page.endswith(".md"):
            assert f"docs/{page}" in PAGES, page
    # The two set-up commands: the main job, and the tests.
    setup = re.findall(r"```sh\n(python3 -m pip install [^\n]*)\n```", readme)
    assert len(setup) == 2 and setup[0].endswith("&& mobilenet-train") and "pytest" in setup[1]


def test_no_library_module_imports_the_cli():
    for root, _, files in os.walk(os.path.join(REPO, "mobilenet_tf")):
        if os.path.basename(root) == "cli":
            continue
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name)) as f:
                    assert "mobilenet_tf.cli" not in f.read(), os.path.join(root, name)


@pytest.mark.slow  # every documented command on the digits: ~10 minutes on 2 cores; CI runs it
def test_every_runnable_command_in_the_docs(tmp_path, cache_dir):
    shutil.copytree(os.path.join(materialize(str(cache_dir)), "train"), tmp_path / "photos")
    os.symlink(os.path.join(REPO, "benchmarks"), tmp_path / "benchmarks")
    env = env_for(cache_dir)
    ran = 0
    for page in PAGES:
        for block in [] if page in RUN_ELSEWHERE else runnable_blocks(page):
            result = subprocess.run(["bash", "-c", f"set -e -o pipefail\n{DEMO}\n{block}"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=1800)
            assert result.returncode == 0, f"{page}:\n{block}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            ran += block.count("mobilenet-")
    assert ran >= 15
