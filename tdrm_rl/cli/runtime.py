"""The process environment of a run, in one place: defaults, the Ray connection, what actors inherit.

Imported by the CLI, the paper reproduction, the worker groups, the benchmarks and the tests.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

from tdrm_rl.config import RunConfig

# Offline hubs, no usage stats, no tokenizer thread pools fighting torch's.
DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
# What a Ray actor gets from the driver's environment (on a cluster it does not inherit it).
WORKER_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_EXTENSIONS_DIR", "RAY_USAGE_STATS_ENABLED",
               "TOKENIZERS_PARALLELISM", "PYTHONPATH", "TDRM_LOG_LEVEL")


def set_runtime_defaults() -> None:
    """The DEFAULTS (a variable already set wins), localhost-only Ray auth for a local instance, and a
    per-environment DeepSpeed JIT cache."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def worker_env() -> dict[str, str]:
    """Environment every actor needs: this process's values of WORKER_KEYS, else the DEFAULTS."""
    env = {k: os.environ[k] for k in WORKER_KEYS if k in os.environ}
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    return env


class ClusterError(Exception):
    """The Ray cluster cannot be joined or a local instance cannot start: a user error, one line, exit 2."""


def ray_job_working_dir() -> str | None:
    """The `--working-dir` of the Ray job this driver runs in (`ray job submit`), or None outside one.

    Ray hands the job's runtime env to its driver in RAY_JOB_CONFIG_JSON_ENV_VAR; with a working_dir the driver
    (and every actor) runs in Ray's per-node copy of it under runtime_resources/working_dir_files/."""
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    except ValueError:
        return None
    return ((job.get("runtime_env") or {}).get("working_dir") or None) if isinstance(job, dict) else None


def resolve_output_dir(cfg: RunConfig) -> str:
    """Make `trainer.output_dir` absolute on the driver, so every actor writes where the driver does; returns a
    line saying where outputs go. Refuses a relative one inside a Ray job with a working_dir: there the current
    folder is Ray's per-node copy of the working dir, which Ray deletes, and on several nodes the checkpoint
    shards would scatter over their copies (review F12)."""
    out = cfg.trainer.output_dir
    if not os.path.isabs(out):
        job_dir = ray_job_working_dir()
        if job_dir:
            raise ClusterError(f"trainer.output_dir={out} is relative, and this Ray job runs in Ray's temporary "
                               f"per-node copy of its --working-dir ({os.getcwd()}), which Ray deletes; give an "
                               f"absolute path on storage every node mounts, e.g. trainer.output_dir=/shared/runs/"
                               f"{os.path.basename(os.path.normpath(out))}")
        cfg.trainer.output_dir = os.path.abspath(out)
    line = f"outputs: {cfg.trainer.output_dir}"
    if _cluster_target(cfg) is not None:
        line += " (trainer ranks on other nodes write their checkpoint shards there too: use storage every node mounts)"
    return line


# What to look at when an address does not answer (named in every join error).
_CHECKS = ("check that a Ray head node runs there (`ray status --address {addr}` on it), that the port is its GCS "
           "port (6379 unless `ray start --head --port` chose another; not the dashboard's 8265), and "
           "cluster.address / RAY_ADDRESS")

# A GCS handshake in a child process: Ray's C++ connect timeouts are read once, when `ray` is imported,
# so only a fresh process can shorten them, and a child that overruns can be killed.
_GCS_PROBE = ("import sys\n"
              "from ray._raylet import InnerGcsClient\n"
              "InnerGcsClient.standalone(sys.argv[1], None, int(sys.argv[2]))\n")


def _cluster_target(cfg: RunConfig) -> tuple[str, str] | None:
    """(where the address came from, the address), or None for a new local instance."""
    if cfg.cluster.address:
        source, address = "cluster.address", cfg.cluster.address
    elif os.environ.get("RAY_ADDRESS"):
        source, address = "RAY_ADDRESS", os.environ["RAY_ADDRESS"]
    else:
        return None
    return None if address == "local" else (source, address)


def _split_host_port(hostport: str, default_port: int | None = None) -> tuple[str, int] | None:
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, ""
    host = host.strip("[]")  # [::1]:6379
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None if something accepts a TCP connection at host:port within `timeout`, else why not."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.1)):
            return None
    except socket.gaierror as e:
        return f"host name {host!r} does not resolve ({e.strerror})"
    except (socket.timeout, TimeoutError):
        return f"no answer within {timeout:g}s"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except OSError as e:
        return (e.strerror or type(e).__name__).lower()


def _gcs_probe(hostport: str, timeout: float) -> str | None:
    """None if a Ray GCS answers at hostport within `timeout` (checked in a child process), else why not."""
    timeout = max(timeout, 2.0)
    step = str(max(1, int(timeout / 3)))
    env = dict(os.environ, RAY_gcs_rpc_server_connect_timeout_s=step, RAY_py_gcs_connect_timeout_s=step)
    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PROBE, hostport, str(int(timeout * 1000))], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)  # on expiry the child is killed and reaped
    except subprocess.TimeoutExpired:
        return "something listens there but no Ray GCS answered"
    if proc.returncode != 0:
        return "something listens there but it does not answer as a Ray GCS"
    return None


def check_cluster(cfg: RunConfig, handshake: bool = True) -> str | None:
    """Fail fast, with one line, on a cluster address that cannot be joined or a local start that cannot bind.

    Returns the address `ray.init` should get (None: start a local instance). Bounded by
    `cluster.connect_timeout_s`: a TCP connect to the address, then (handshake) a GCS handshake in a child
    process. Handles host:port (what Ray dials: a localhost address becomes this node's IP, as in Ray),
    `auto` (the instance `ray start` left on this machine), `ray://host[:10001]` (Ray Client: only the TCP
    connect is checked; Ray's client then gives up within about 30 s) and rejects http(s):// (a dashboard /
    job-submission address, not one to join).
    """
    timeout = cfg.cluster.connect_timeout_s
    target = _cluster_target(cfg)
    if target is None:
        check_local_start(cfg)
        return None
    source, address = target
    where = f"{source}={address}"
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("http", "https"):
        raise ClusterError(f"{where} is a dashboard / job-submission address, which a driver cannot join; give the "
                           "head node's GCS address (host:6379) or a Ray Client address (ray://host:10001), or "
                           f"submit the run there: `ray job submit --address {address} --working-dir . -- tdrm-rl "
                           "train RECIPE`")
    if sep and scheme != "ray":
        raise ClusterError(f"{where}: unknown scheme {scheme!r}; expected host:port, auto, local or ray://host:port")
    if sep:  # Ray Client
        parsed = _split_host_port(rest.split("/")[0], default_port=10001)
        if parsed is None:
            raise ClusterError(f"{where} is not ray://host:port")
        problem = _tcp_probe(*parsed, timeout)
        if problem:
            raise ClusterError(f"cannot reach a Ray Client server at {where} within {timeout:g}s: {problem}; check "
                               "that a head node runs there with its client server (port 10001 unless `ray start "
                               "--ray-client-server-port` chose another), and cluster.address / RAY_ADDRESS")
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        dial = canonicalize_bootstrap_address(address)  # auto -> the instance on this machine; localhost -> node IP
    except ConnectionError:
        raise ClusterError(f"{where}: no running Ray instance found on this machine; start one with `ray start "
                           "--head`, give its address, or leave cluster.address and RAY_ADDRESS unset to start a "
                           "local instance") from None
    except ValueError:
        raise ClusterError(f"{where} is not host:port (e.g. 10.0.0.1:6379), auto, local or ray://host:port") from None
    parsed = _split_host_port(dial or "")
    if parsed is None:
        raise ClusterError(f"{where} is not host:port (e.g. 10.0.0.1:6379), auto, local or ray://host:port")
    shown = where if dial == address else f"{where} (dialled as {dial})"
    deadline = time.monotonic() + timeout
    problem = _tcp_probe(*parsed, timeout)
    if problem is None and handshake:
        problem = _gcs_probe(dial, deadline - time.monotonic())
    if problem:
        raise ClusterError(f"cannot join a Ray cluster at {shown} within {timeout:g}s: {problem}; "
                           + _CHECKS.format(addr=dial))
    return dial


def check_local_start(cfg: RunConfig) -> None:
    """A local instance must be able to bind its ports at cluster.node_ip_address (and the dashboard's host)."""
    hosts = [("cluster.node_ip_address", cfg.cluster.node_ip_address)]
    if cfg.cluster.include_dashboard:
        hosts.append(("cluster.dashboard_host", cfg.cluster.dashboard_host))
    for key, host in hosts:
        try:
            family = socket.getaddrinfo(host, None)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
        except OSError as e:
            raise ClusterError(f"{key}={host}: a local Ray instance cannot bind there ({e.strerror or e}); use "
                               "127.0.0.1 or an address of this machine (`hostname -I`), or set cluster.address to "
                               "join a running cluster") from None


def init_ray(cfg: RunConfig) -> bool:
    """Connect to `cluster.address` / RAY_ADDRESS if given, else start a local instance. Returns True if started.

    Bounded: an address that cannot be joined, or a local instance that cannot bind, raises ClusterError within
    about `cluster.connect_timeout_s` (see `check_cluster`).
    """
    import ray

    deadline = time.monotonic() + cfg.cluster.connect_timeout_s
    address = check_cluster(cfg)
    if address:
        # The GCS answered just now; still bound Ray's own connect retries (about 1 s each) by the time left.
        retries = str(max(1, int(deadline - time.monotonic())))
        saved = os.environ.get("RAY_gcs_server_port_wait_time_s")
        os.environ["RAY_gcs_server_port_wait_time_s"] = retries
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as e:
            where = "=".join(_cluster_target(cfg) or ("cluster.address", address))
            raise ClusterError(f"cannot join the Ray cluster at {where}: {str(e).splitlines()[0]}; "
                               + _CHECKS.format(addr=address)) from None
        finally:
            if saved is None:
                os.environ.pop("RAY_gcs_server_port_wait_time_s", None)
            else:
                os.environ["RAY_gcs_server_port_wait_time_s"] = saved
        return False
    # Ports and dashboard bind to localhost unless the recipe names another address.
    # address="local": a new instance even if `ray start` left a cluster behind (plain init would join it).
    try:
        ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=cfg.cluster.include_dashboard,
                 dashboard_host=cfg.cluster.dashboard_host, _node_ip_address=cfg.cluster.node_ip_address,
                 logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as e:
        ray.shutdown()  # whatever it started
        raise ClusterError(f"could not start a local Ray instance at cluster.node_ip_address="
                           f"{cfg.cluster.node_ip_address}: {str(e).splitlines()[0]}") from None
    return True
