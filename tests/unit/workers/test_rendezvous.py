"""The trainer groups' rendezvous address (review F8): Ray's address for the node, never the hostname's lookup."""

from __future__ import annotations

import socket

import ray

from tdrm_rl.config import load_config
from tdrm_rl.workers.base import BaseWorker


def test_a_multi_rank_group_meets_at_rays_node_ip_not_the_hostname(monkeypatch):
    # Ubuntu's /etc/hosts maps the hostname to 127.0.1.1: ranks on another node could never connect there.
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    worker = BaseWorker(load_config(None), rank=0, world_size=2, num_threads=1)
    addr, port = worker.node_address()
    assert addr == ray.util.get_node_ip_address() and addr != "127.0.1.1"
    assert 0 < port < 65536


def test_a_single_rank_group_stays_on_loopback():
    addr, _ = BaseWorker(load_config(None), rank=0, world_size=1, num_threads=1).node_address()
    assert addr == "127.0.0.1"
