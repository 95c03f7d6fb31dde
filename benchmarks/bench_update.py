"""Benchmark: end-to-end update of a 5 MB and a 50 MB artifact from a local HTTPS server.

Run:  .venv/bin/python benchmarks/bench_update.py  [--sizes 5,50] [--repeat 1]

For each size, two fresh child interpreters update an agent binary from a local HTTPS
server (served by this parent process with Trio, self-signed CA):

* ``streamed``: ``updater.UpdateManager`` end to end: envelope verification, streamed
  download with hashing, journalled backup, verified atomic switch, commit (trial skipped:
  ``trial_s=0``, and a no-op AgentControl).
* ``naive``: the seed's approach (004 section 3.4): the same download into a file, then the
  whole file read into memory to hash it and check the RSA PKCS#1 v1.5 signature, then
  copy for the backup and copy over the target.

Each child reports its wall time and its peak RSS (``ru_maxrss``, the high-water mark of
resident memory) beyond its own baseline after imports. The table shows that the streamed
updater's memory does not grow with the artifact size, while the naive one grows by the
artifact's size.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "updater"))

MB = 1024 * 1024


def _rss_mb() -> float:
    """Peak resident memory of this process image, in MiB.

    ``VmHWM`` from /proc is per address space, so it starts afresh at ``exec``; Linux's
    ``ru_maxrss`` instead carries the parent's high-water mark over fork and exec, which
    would hide the child's own figure. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- child side ----------------------------------------------------------------------------


class _NoAgent:
    async def stop_agent(self, agent_id: str) -> None:
        return None

    async def start_agent(self, agent_id: str) -> None:
        return None

    async def wait_ready(self, agent_id: str) -> None:
        return None

    async def wait_exit(self, agent_id: str) -> int | None:
        import trio

        await trio.sleep_forever()

    def tail(self, agent_id: str, lines: int) -> list[str]:
        return []


def child(args: argparse.Namespace) -> None:
    import ssl

    import trio

    import updater
    from updater._download import download

    work = Path(args.work)
    context = ssl.create_default_context(cafile=args.ca)
    limits = updater.DownloadLimits(max_bytes=1 << 30, disk_reserve_bytes=0)
    config = updater.UpdateConfig(
        state_dir=work / "state",
        download_dir=work / "downloads",
        backup_dir=work / "backups",
        platform="linux-x86_64",
        trial_s=0.0,
        keyring_file=work / "keyring.json",
        public_key_file=work / "legacy.pub",
        legacy_components=frozenset({"agent"}),
        limits=limits,
    )
    binary = work / "bin" / "agent"
    envelope = (work / "envelope.json").read_text()
    legacy_sig = (work / "legacy.sig").read_text()
    baseline = _rss_mb()

    async def streamed() -> None:
        manager = updater.UpdateManager(
            config,
            agents=[updater.AgentTarget("agent", "a1", binary)],
            control=_NoAgent(),
            ssl_context=context,
        )
        await manager.adopt("agent", "1.0.0", counter=1)
        result = await manager.update(
            updater.UpdateRequest("agent", "2.0.0", args.url, envelope=envelope)
        )
        assert result.success, result

    async def naive() -> None:
        from updater import _crypto
        from updater._envelope import Keyring
        from updater._trust import load_keyring

        staged = await download(args.url, work / "downloads", limits=limits, ssl_context=context)
        content = staged.path.read_bytes()  # the seed: os.ReadFile, then sha256.Sum256
        digest = hashlib.sha256(content).digest()
        keyring: Keyring = load_keyring(config, updater._store.StateStore(config.state_dir))
        key = next(k for k in keyring.keys.values() if k.legacy)
        assert _crypto.verify_legacy(key, base64.b64decode(legacy_sig), digest)
        (work / "backups").mkdir(exist_ok=True)
        shutil.copyfile(binary, work / "backups" / "agent_1.bak")  # copyFile(src, backup)
        shutil.copyfile(staged.path, binary)  # copyFile(pkg, binary)
        os.chmod(binary, 0o755)
        staged.path.unlink()

    start = time.perf_counter()
    trio.run(streamed if args.child == "streamed" else naive)
    elapsed = time.perf_counter() - start
    peak = _rss_mb()  # before the check below, which reads the result back (streamed)
    from updater._fs import sha256_file

    assert sha256_file(binary) == args.sha256
    print(json.dumps({"seconds": elapsed, "peak_mb": peak, "baseline_mb": baseline}))


# --- parent side ---------------------------------------------------------------------------


def _prepare(work: Path, size: int, tls_dir: Path) -> tuple[Path, str]:
    from fault_server import make_tls_files
    from updater_testlib import PLATFORM

    from updater import _crypto
    from updater._envelope import Keyring, Statement, encode_keyring
    from updater.sign import sign_statement

    artifact = work / "artifact.bin"
    digest = hashlib.sha256()
    with artifact.open("wb") as stream:
        for _ in range(size // MB):
            chunk = os.urandom(MB)
            digest.update(chunk)
            stream.write(chunk)
    (work / "bin").mkdir()
    (work / "bin" / "agent").write_bytes(b"#!/bin/sh\necho old\n")
    pem = _crypto.generate_private_key("ed25519")
    record = _crypto.public_key_record("ed25519", _crypto.public_der_of(pem), frozenset({"agent"}))
    far = int(time.time()) + 86400
    (work / "keyring.json").write_bytes(encode_keyring(Keyring.of([record], expires=far)))
    statement = Statement("agent", PLATFORM, "2.0.0", 2, digest.hexdigest(), size, far)
    (work / "envelope.json").write_bytes(sign_statement(statement, [pem]))
    legacy = _crypto.generate_private_key("rsa-pkcs1v15-sha256")
    from cryptography.hazmat.primitives import serialization

    public = _crypto.load_private_key(legacy).public_key()
    (work / "legacy.pub").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signature = _crypto.sign_legacy(legacy, digest.digest())
    (work / "legacy.sig").write_text(base64.b64encode(signature).decode())
    tls = make_tls_files(tls_dir)
    (tls_dir / "ca.pem").write_bytes(tls.ca_pem)
    return artifact, digest.hexdigest()


async def _serve_and_run(artifact: Path, tls_dir: Path, commands: list[list[str]]) -> list[str]:
    import trio
    from fault_server import TLSFiles

    tls = TLSFiles(
        (tls_dir / "ca.pem").read_bytes(), tls_dir / "server.crt", tls_dir / "server.key"
    )
    context = tls.server_context()
    size = artifact.stat().st_size

    async def handler(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(stream, context, server_side=True)
        try:
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = await wrapped.receive_some(4096)
                if not data:
                    return
                buffer += data
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
            await wrapped.send_all(head.encode())
            with artifact.open("rb") as source:
                while chunk := source.read(256 * 1024):
                    await wrapped.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(wrapped)

    outputs = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for command in commands:
            url = f"https://127.0.0.1:{port}/artifact"
            proc = await trio.run_process([*command, "--url", url], capture_stdout=True)
            outputs.append(proc.stdout.decode())
        nursery.cancel_scope.cancel()
    return outputs


def parent(args: argparse.Namespace) -> None:
    import trio

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size_mb in sizes:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
                base = Path(tmp)
                tls_dir = base / "tls"
                tls_dir.mkdir()
                prep = base / "prep"
                prep.mkdir()
                artifact, sha = _prepare(prep, size_mb * MB, tls_dir)
                commands = []
                for mode in ("streamed", "naive"):
                    work = base / mode
                    shutil.copytree(prep, work, ignore=shutil.ignore_patterns("artifact.bin"))
                    ca = str(tls_dir / "ca.pem")
                    command = [sys.executable, __file__, "--child", mode, "--work", str(work)]
                    commands.append([*command, "--ca", ca, "--sha256", sha])
                outputs = trio.run(_serve_and_run, artifact, tls_dir, commands)
                for mode, output in zip(("streamed", "naive"), outputs, strict=True):
                    rows.append((size_mb, mode, json.loads(output)))
    print(
        f"{'size':>6} {'mode':>9} {'time s':>8} {'MB/s':>7} {'peak RSS MB':>12} {'growth MB':>10}"
    )
    for size_mb, mode, r in rows:
        growth = r["peak_mb"] - r["baseline_mb"]
        print(
            f"{size_mb:>4}MB {mode:>9} {r['seconds']:>8.2f} {size_mb / r['seconds']:>7.1f}"
            f" {r['peak_mb']:>12.1f} {growth:>10.1f}"
        )
    by = {(s, m): r for s, m, r in rows}
    print()
    for size_mb in sizes:
        stream, naive = by[(size_mb, "streamed")], by[(size_mb, "naive")]
        print(
            f"{size_mb:>4}MB naive/streamed: time x{naive['seconds'] / stream['seconds']:.2f},"
            f" peak RSS x{naive['peak_mb'] / stream['peak_mb']:.2f}"
        )
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        for mode in ("streamed", "naive"):
            delta = by[(large, mode)]["peak_mb"] - by[(small, mode)]["peak_mb"]
            print(f"{mode:>9}: peak RSS {large}MB - {small}MB = {delta:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,50", help="artifact sizes in MB")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", choices=["streamed", "naive"])
    parser.add_argument("--work")
    parser.add_argument("--ca")
    parser.add_argument("--url")
    parser.add_argument("--sha256")
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
