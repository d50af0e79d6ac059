"""Launching on clusters: the SLURM step's variables and a Kubernetes Indexed Job's, turned into
the cluster of a MultiWorkerMirroredStrategy; two real SLURM-configured workers on loopback."""

import os
import re
import signal
import socket
import subprocess

import pytest
import yaml

from mobilenet_tf import distribute

from clis import REPO, env_for, one_error_line, run, start, train_cmd, wait_for

CLUSTER_VARIABLES = ("TF_CONFIG", "JOB_COMPLETION_INDEX", "MOBILENET_TF_WORKERS", "CUDA_VISIBLE_DEVICES")


def no_cluster_env(cache_dir=None, **extra):
    env = env_for(cache_dir, **extra)
    for name in list(env):
        if (name.startswith("SLURM_") or name in CLUSTER_VARIABLES) and name not in extra:
            del env[name]
    return env


def slurm_step(monkeypatch, nodelist, tasks_per_node, procid, **extra):
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in CLUSTER_VARIABLES:
            monkeypatch.delenv(name)
    tasks = sum(int(m.group(1)) * int(m.group(3) or 1)
                for m in re.finditer(r"(\d+)(\(x(\d+)\))?", tasks_per_node))
    for name, value in dict(SLURM_PROCID=procid, SLURM_STEP_NUM_TASKS=tasks, SLURM_STEP_NODELIST=nodelist,
                            SLURM_STEP_TASKS_PER_NODE=tasks_per_node, SLURM_JOB_ID=77, **extra).items():
        monkeypatch.setenv(name, str(value))


def test_slurm_step_on_cpu_nodes(monkeypatch):
    """No GPU and no nvidia-smi: TF's resolver alone fails (it divides the node's GPUs among its
    tasks); ours gives the same cluster and leaves CUDA_VISIBLE_DEVICES alone."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    slurm_step(monkeypatch, "cpu[07-08],cpu10", "2(x2),1", procid=3, MOBILENET_TF_PORT=9000)
    resolver = distribute.cluster_resolver()
    assert resolver.cluster_spec().as_dict() == {
        "worker": ["cpu07:9000", "cpu07:9001", "cpu08:9000", "cpu08:9001", "cpu10:9000"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 3)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and resolver.num_accelerators() == {}


def test_slurm_step_on_gpu_nodes(monkeypatch):
    slurm_step(monkeypatch, "gpu[1-2]", "2(x2)", procid=1, SLURM_GPUS_ON_NODE=8)
    resolver = distribute.cluster_resolver()
    assert resolver.cluster_spec().as_dict()["worker"] == ["gpu1:8888", "gpu1:8889", "gpu2:8888", "gpu2:8889"]
    assert resolver.task_id == 1
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"  # the second task of gpu1: its half of the GPUs
    assert resolver.num_accelerators() == {"GPU": 4}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_kubernetes_tf_config(workers):
    env = {"MOBILENET_TF_WORKERS": str(workers), "MOBILENET_TF_JOB": "mobilenet",
           "MOBILENET_TF_SERVICE": "mobilenet-workers"}
    hosts = [f"mobilenet-{i}.mobilenet-workers:2222" for i in range(workers)]
    for index in range(workers):
        spec = distribute.kubernetes_tf_config({**env, "JOB_COMPLETION_INDEX": str(index)})
        assert spec == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    with pytest.raises(distribute.StrategyError, match=f"JOB_COMPLETION_INDEX={workers}: outside"):
        distribute.kubernetes_tf_config({**env, "JOB_COMPLETION_INDEX": str(workers)})
    with pytest.raises(distribute.StrategyError, match="MOBILENET_TF_SERVICE is not set"):
        distribute.kubernetes_tf_config({"JOB_COMPLETION_INDEX": "0", "MOBILENET_TF_WORKERS": "2",
                                         "MOBILENET_TF_JOB": "mobilenet"})


def documented_command(page):
    """The command of the page's ```sh block marked `# the container's command`."""
    with open(os.path.join(REPO, "docs", page)) as f:
        blocks = re.findall(r"```sh\n(.*?)```", f.read(), re.S)
    (block,) = [b for b in blocks if "# the container's command" in b]
    return " ".join(block.replace("\\\n", " ").split("#")[0].split())


def test_kubernetes_manifest_runs_the_documented_command():
    with open(os.path.join(REPO, "scripts", "kubernetes", "train.yaml")) as f:
        service, job = yaml.safe_load_all(f)
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    (container,) = pod["containers"]
    assert " ".join(container["command"]) == documented_command("kubernetes.md")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["MOBILENET_TF_WORKERS"]) == spec["completions"] == spec["parallelism"]
    assert env["MOBILENET_TF_JOB"] == job["metadata"]["name"]
    assert env["MOBILENET_TF_SERVICE"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    # The TF_CONFIG of its pods: every worker at the Service's DNS names.
    tf_config = distribute.kubernetes_tf_config({**env, "JOB_COMPLETION_INDEX": "1"})
    assert tf_config["cluster"]["worker"] == ["mobilenet-0.mobilenet-workers:2222", "mobilenet-1.mobilenet-workers:2222"]
    assert {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [75]}} \
        in spec["podFailurePolicy"]["rules"]


def test_slurm_script_requeues_on_preemption():
    with open(os.path.join(REPO, "scripts", "train_slurm.sbatch")) as f:
        script = f.read()
    assert subprocess.run(["bash", "-n", os.path.join(REPO, "scripts", "train_slurm.sbatch")]).returncode == 0
    directives = re.findall(r"^#SBATCH (\S+)", script, re.M)
    assert "--requeue" in directives and any(d.startswith("--signal=TERM@") for d in directives)
    assert "srun --kill-on-bad-exit=1 mobilenet-train --strategy=multi_worker \"$@\"" in script
    assert re.search(r"status -eq 75 .*\n.*\n\s+scontrol requeue", script)


def test_multi_worker_without_a_cluster_fails_in_one_line(tmp_path, cache_dir):
    result = run("train", "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}", cache_dir=cache_dir,
                 env=no_cluster_env(cache_dir))
    line = one_error_line(result, "train")
    assert "no cluster is described" in line and "TF_CONFIG" in line and "SLURM" in line, line
    assert not os.path.exists(tmp_path / "run")


def free_port_pair():
    """A port p with p + 1 free too (a node's two SLURM tasks listen on consecutive ports)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.slow  # two workers, preempted and requeued: ~3 minutes on 2 cores; CI runs it
def test_two_slurm_tasks_train_together_and_resume_after_preemption(tmp_path, cache_dir):
    model_dir = tmp_path / "run"
    port = free_port_pair()

    def task(procid):
        env = no_cluster_env(cache_dir, SLURM_PROCID=str(procid), SLURM_STEP_NUM_TASKS="2",
                             SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2", SLURM_JOB_ID="77",
                             MOBILENET_TF_PORT=str(port))
        return start(train_cmd(model_dir, "--strategy=multi_worker", "--log_steps=11"), env)

    # Preempted: SIGTERM to the second worker only; both stop after the same step, exit 75.
    workers = [task(0), task(1)]
    for process in workers:
        wait_for(process, "step 11/88")
    workers[1].send_signal(signal.SIGTERM)
    outputs = [process.communicate(timeout=300)[1] for process in workers]
    assert [p.returncode for p in workers] == [75, 75], outputs[0][-2000:] + outputs[1][-2000:]
    steps = {int(re.search(r"preempted by .* at step (\d+)", out).group(1)) for out in outputs}
    assert len(steps) == 1
    (step,) = steps
    assert os.path.exists(model_dir / f"ckpt-{step}.index")

    # Requeued: the same command on both resumes from that step and trains together to the end.
    workers = [task(0), task(1)]
    outputs = [process.communicate(timeout=900)[1] for process in workers]
    for process, out in zip(workers, outputs):
        assert process.returncode == 0, out[-3000:]
        assert f"starting at step {step}" in out and "2 replica(s)" in out
    for index, out in enumerate(outputs):
        assert re.search(rf"worker {index} of 2 \(localhost:{port + index}\): devices /job:worker/replica:0/"
                         rf"task:{index}/device:CPU:0", out), out[-3000:]
    digests = [re.findall(r"weights digest (\w+)", out) for out in outputs]
    assert digests[0] == digests[1] and len(digests[0]) == 1
    # Only the chief wrote the run directory: checkpoints and one export.
    assert os.path.exists(model_dir / "ckpt-88.index")
    assert sorted(os.listdir(model_dir / "export")) == ["1"]
