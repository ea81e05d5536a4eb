"""File streaming on both backends: whole files, checked; everything else refused."""

from __future__ import annotations

import hashlib
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from chaski_actors import FileTransferError, Node, Settings
from chaski_actors.files import (
    FILE_CHUNK,
    FILE_END,
    FILE_OFFER,
    Files,
    check_file_name,
)
from chaski_actors.testing import eventually
from conftest import Backend

BAD_NAMES = ["", ".", "..", "../up", "a/b", "/etc/passwd", "a\\b", "C:x", "n\x00ul"]


async def pair(
    net: Any, stack: AsyncExitStack, settings: Settings | None = None
) -> tuple[Files, Files]:
    a = await stack.enter_async_context(Node(net.runtime("a"), "a"))
    b = await stack.enter_async_context(Node(net.runtime("b"), "b", settings=settings))
    await a.connect(*b.address)
    await eventually(a.runtime, lambda: "a" in b.links)
    return Files(a), Files(b)


def make_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(bytes(i * 7 % 251 for i in range(size)))
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    outbox, inbox = tmp_path / "out", tmp_path / "in"
    outbox.mkdir()
    inbox.mkdir()
    return outbox, inbox


def test_a_file_arrives_whole_and_checked(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    outbox, inbox = dirs
    # Four chunks, the last short; less than the 256 KiB window of a sim link.
    source = make_file(outbox, "data.bin", 200_000)

    async def main(net: Any) -> tuple[Any, Any, Any]:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack)
            receiver.allow(inbox)
            receipt = await sender.send("b", source, name="copy.bin")
            notice = await receiver.received()
            assert (
                repr(receiver)
                == f"<Files b folder={inbox.resolve()} incoming=0 outgoing=0>"
            )
            return receipt, notice, receiver.statistics()

    receipt, notice, stats = backend.run(main)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (receipt.name, receipt.size, receipt.sha256) == ("copy.bin", 200_000, digest)
    assert (notice.source, notice.path) == ("a", inbox.resolve() / "copy.bin")
    assert (inbox / "copy.bin").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in inbox.iterdir()) == ["copy.bin"]
    assert (stats.received, stats.bytes_received, stats.incoming) == (1, 200_000, 0)
    if backend.simulated:
        # Offer and answer, then chunks and done: two round trips of 20 ms.
        assert receipt.seconds == pytest.approx(0.04, abs=1e-9)


def test_files_are_refused_unless_allowed_or_too_big(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    outbox, inbox = dirs
    source = make_file(outbox, "big.bin", 5000)

    async def main(net: Any) -> list[str]:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack)
            reasons = []
            with pytest.raises(FileTransferError) as info:
                await sender.send("b", source)
            reasons.append(str(info.value))
            receiver.allow(inbox, max_size=1000)
            with pytest.raises(FileTransferError) as info:
                await sender.send("b", source)
            reasons.append(str(info.value))
            assert receiver.statistics().refused == 2
            return reasons

    reasons = backend.run(main)
    assert reasons[0] == "b refused big.bin: b does not accept files"
    assert "5000 bytes exceeds the receiver's limit of 1000" in reasons[1]
    assert list(inbox.iterdir()) == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_paths_are_refused(name: str) -> None:
    with pytest.raises(FileTransferError):
        check_file_name(name)


def test_a_hostile_offer_writes_nothing_outside_the_folder(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    outbox, inbox = dirs
    outside = make_file(outbox, "precious.txt", 10)
    (inbox / "link").symlink_to(outside)
    (inbox / "taken").write_bytes(b"mine")

    async def main(net: Any) -> Any:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack)
            receiver.allow(inbox)
            link = sender.node.links["b"]
            names = [*BAD_NAMES, "link", "taken", str(outside)]
            for transfer, name in enumerate(names):
                await link.send_frame(FILE_OFFER, transfer, name, 3, "0" * 64)
            await eventually(
                sender.runtime, lambda: receiver.statistics().refused == len(names)
            )
            # The sender's side refuses the same names before sending anything.
            with pytest.raises(FileTransferError, match="is a path"):
                await sender.send("b", outside, name="../escape")
            return receiver.statistics()

    stats = backend.run(main)
    assert stats.incoming == 0 and stats.received == 0
    assert outside.read_bytes() == bytes(i * 7 % 251 for i in range(10))
    assert sorted(p.name for p in inbox.iterdir()) == ["link", "taken"]


def test_a_corrupted_transfer_is_discarded(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    _outbox, inbox = dirs
    wrong = hashlib.sha256(b"something else").hexdigest()

    async def main(net: Any) -> Any:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack)
            receiver.allow(inbox)
            link = sender.node.links["b"]
            await link.send_frame(FILE_OFFER, 1, "bad.bin", 6, wrong)
            await link.send_frame(FILE_CHUNK, 1, 0, b"abcdef")
            await link.send_frame(FILE_END, 1)
            # Too many bytes for the offer: cut off at once.
            await link.send_frame(FILE_OFFER, 2, "long.bin", 2, wrong)
            await link.send_frame(FILE_CHUNK, 2, 0, b"abc")
            await eventually(sender.runtime, lambda: receiver.statistics().failed == 2)
            return receiver.statistics()

    stats = backend.run(main)
    assert (stats.failed, stats.received, stats.incoming) == (2, 0, 0)
    assert list(inbox.iterdir()) == []


def test_a_lost_link_fails_the_transfer_and_cleans_up(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    _outbox, inbox = dirs

    async def main(net: Any) -> Any:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack)
            receiver.allow(inbox)
            link = sender.node.links["b"]
            await link.send_frame(FILE_OFFER, 1, "half.bin", 10, "0" * 64)
            await link.send_frame(FILE_CHUNK, 1, 0, b"abcde")
            await eventually(
                sender.runtime, lambda: receiver.statistics().incoming == 1
            )
            assert len(list(inbox.iterdir())) == 1  # the hidden part file
            await sender.node.stop()
            await eventually(sender.runtime, lambda: receiver.statistics().failed == 1)
            return receiver.statistics()

    stats = backend.run(main)
    assert stats.incoming == 0
    assert list(inbox.iterdir()) == []


def test_a_silent_sender_loses_its_slot(
    backend: Backend, dirs: tuple[Path, Path]
) -> None:
    _outbox, inbox = dirs
    settings = Settings().replace(call_timeout_s=0.5)

    async def main(net: Any) -> tuple[float, Any]:
        async with AsyncExitStack() as stack:
            sender, receiver = await pair(net, stack, settings)
            receiver.allow(inbox)
            link = sender.node.links["b"]
            start = sender.runtime.now()
            await link.send_frame(FILE_OFFER, 1, "stuck.bin", 10, "0" * 64)
            await link.send_frame(FILE_CHUNK, 1, 0, b"abc")
            await eventually(sender.runtime, lambda: receiver.statistics().failed == 1)
            return sender.runtime.now() - start, receiver.statistics()

    took, stats = backend.run(main)
    assert stats.incoming == 0 and list(inbox.iterdir()) == []
    if backend.simulated:
        # The chunk lands 10 ms after it is sent; silence for 0.5 s after that.
        assert took == pytest.approx(0.51, abs=2e-3)
    else:
        assert took >= 0.5
