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


def manifest(name):
    with open(os.path.join(REPO, "scripts", "kubernetes", name)) as f:
        return yaml.safe_load(f)


def project_version():
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        return re.search(r'^version = "(.+)"', f.read(), re.M).group(1)


def test_kubernetes_jobset_runs_the_documented_command_and_restarts_the_whole_group():
    jobset = manifest("train.yaml")
    assert jobset["apiVersion"].startswith("jobset.x-k8s.io/") and jobset["kind"] == "JobSet"
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert job["completionMode"] == "Indexed" and replicated["replicas"] == 1
    (container,) = job["template"]["spec"]["containers"]
    assert " ".join(container["command"]) == documented_command("kubernetes.md")
    assert container["image"] == f"mobilenet-tf:{project_version()}"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["MOBILENET_TF_WORKERS"]) == job["completions"] == job["parallelism"]
    # The pods' DNS names under the JobSet's headless Service: <jobset>-<job>-<job index>-<pod index>.<jobset>.
    assert jobset["spec"]["network"]["enableDNSHostnames"]
    assert env["MOBILENET_TF_JOB"] == f"{jobset['metadata']['name']}-{replicated['name']}-0"
    assert env["MOBILENET_TF_SERVICE"] == jobset["metadata"]["name"]
    tf_config = distribute.kubernetes_tf_config({**env, "JOB_COMPLETION_INDEX": "1"})
    assert tf_config["cluster"]["worker"] == ["mobilenet-workers-0-0.mobilenet:2222",
                                              "mobilenet-workers-0-1.mobilenet:2222"]
    # Any failure (75 preempted, 69 a worker lost, a killed pod) fails the Job at once (backoffLimit
    # 0), and the JobSet restarts every Job: the whole group. Status 1 fails the JobSet for good.
    assert job["backoffLimit"] == 0 and jobset["spec"]["failurePolicy"]["maxRestarts"] >= 1
    (fail_job,) = job["podFailurePolicy"]["rules"]
    assert fail_job == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                             "values": [1]}}
    (rule,) = jobset["spec"]["failurePolicy"]["rules"]
    assert rule["action"] == "FailJobSet" and rule["onJobFailureReasons"] == ["PodFailurePolicy"]


def test_kubeflow_tfjob_maps_our_retryable_statuses_onto_its_own():
    tfjob = manifest("tfjob.yaml")
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    assert tfjob["kind"] == "TFJob" and worker["restartPolicy"] == "ExitCode"
    (container,) = worker["template"]["spec"]["containers"]
    assert container["image"] == f"mobilenet-tf:{project_version()}"
    command = container["command"]
    assert " ".join(command[:5]) == documented_command("kubernetes.md")
    # 138: the status TFJob's ExitCode policy keeps for user-declared retryable failures.
    assert command[5:] == ["--exit_code_preempted=138", "--exit_code_peer_lost=138"]


def test_the_image_installs_as_readme_does_and_the_launchers_name_it():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        dockerfile = f.read()
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, "requirements.txt")) as f:
        tensorflow = re.search(r"^tensorflow==(\S+)", f.read(), re.M).group(1)
    assert re.search(rf"^FROM tensorflow/tensorflow:{re.escape(tensorflow)}-gpu$", dockerfile, re.M)
    (install,) = re.findall(r"^RUN (.*)$", dockerfile, re.M)
    first_setup_command = re.findall(r"```sh\n(.*?)\n```", readme, re.S)[0]
    assert first_setup_command == f"{install} && mobilenet-train"
    tag = f"mobilenet-tf:{project_version()}"
    assert f"docker build -t {tag} ." in dockerfile
    for page in ("kubernetes.md", "slurm.md"):
        with open(os.path.join(REPO, "docs", page)) as f:
            assert tag in f.read(), page


@pytest.fixture
def fake_slurm(tmp_path):
    """`srun` exiting with $FAKE_SRUN_STATUS and `scontrol` recording its arguments, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\necho "$@" > "$FAKE_LOG.srun"\nexit "$FAKE_SRUN_STATUS"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$FAKE_LOG.scontrol"\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("status,restarts,requeued", [
    (75, 0, True), (69, 2, True), (137, 0, True),  # preempted, a worker lost, a task killed (a node gone)
    (1, 0, False), (0, 0, False),  # a user error, done
    (69, 3, False), (75, 5, False),  # the retry limit (3 by default) holds
])
def test_slurm_script_requeues_preemption_and_a_lost_worker_up_to_a_limit(fake_slurm, tmp_path, status, restarts,
                                                                         requeued):
    script = os.path.join(REPO, "scripts", "train_slurm.sbatch")
    with open(script) as f:
        directives = re.findall(r"^#SBATCH (\S+)", f.read(), re.M)
    assert "--requeue" in directives and any(d.startswith("--signal=TERM@") for d in directives)
    log = tmp_path / "log"
    env = {**no_cluster_env(), "PATH": f"{fake_slurm}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_SRUN_STATUS": str(status), "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": str(restarts)}
    result = subprocess.run(["bash", script, "--epochs=3"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    srun = (tmp_path / "log.srun").read_text().split()
    assert srun == ["--kill-on-bad-exit=1", "--wait=60", "mobilenet-train", "--strategy=multi_worker", "--epochs=3"]
    scontrol = tmp_path / "log.scontrol"
    assert scontrol.exists() == requeued
    if requeued:
        assert scontrol.read_text().split() == ["requeue", "4242"]
        assert f"requeueing job 4242 ({restarts + 1} of 3)" in result.stderr
    elif status in (69, 75):
        assert "not requeued" in result.stderr


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


@pytest.mark.alone  # two workers of its own
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
