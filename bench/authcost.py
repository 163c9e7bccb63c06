"""
What authenticating a peer line costs, in one process, with no sockets:
microseconds per L{Session.seal} and L{Session.open} beside the wire
format's C{formatMessage} and C{parseMessage} of the same lines.

    python bench/authcost.py                    # this tree's txraft/auth.py
    python bench/authcost.py --baseline REV     # and REV's txraft/auth.py, in the same run

The lines are what a leader's replication is made of: an empty
AppendEntries (a heartbeat), one carrying a C{set} entry, and the answer.
Each figure is the best of C{--repeat} timings of C{--number} calls.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from types import ModuleType

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from txraft import auth  # noqa: E402
from txraft.messages import (  # noqa: E402
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    formatMessage,
    parseMessage,
    splitSender,
)

KEY = b"k" * auth.MIN_KEY_BYTES

#: The peer messages timed, by name.
MESSAGES: dict[str, Message] = {
    "heartbeat": AppendEntries(7, 1041, 7, [], 1041),
    "append 1 set": AppendEntries(7, 1041, 7, [Entry(1042, 7, "set key-0042 " + "v" * 100)], 1041),
    "append answer": AppendEntriesResponse(7, True, 1042),
}


def loadRevision(revision: str) -> ModuleType:
    """Import C{txraft/auth.py} as it was at git C{revision}, under another name."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(
        ["git", "show", f"{revision}:txraft/auth.py"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    directory = tempfile.mkdtemp(prefix="authcost-")
    path = os.path.join(directory, "auth_baseline.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("auth_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sessions(module: ModuleType) -> tuple[auth.Session, auth.Session]:
    """Both sides of a connection that ran C{module}'s handshake."""
    initiator = module.Initiator(KEY, "s1", "s2")
    responder = module.Responder(KEY, "s2")
    proof = initiator.answerChallenge(responder.challenge(initiator.hello()))
    theirs = responder.verify(proof)
    return initiator.confirm(responder.confirmation()), theirs


def microseconds(function: Callable[[], object], number: int, repeat: int) -> float:
    """The best time of one call of C{function}, in microseconds."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def timeSession(module: ModuleType, line: bytes, number: int, repeat: int) -> tuple[float, float]:
    """Microseconds to seal C{line}, and to open it, with C{module}'s L{Session}."""
    sender, receiver = sessions(module)
    seal = microseconds(lambda: sender.seal(line), number, repeat)
    sender, receiver = sessions(module)
    sealed = [sender.seal(line) for _ in range(number * repeat)]
    feed = iter(sealed)
    opened = microseconds(lambda: receiver.open(next(feed)), number, repeat)
    return seal, opened


def timeWire(message: Message, number: int, repeat: int) -> tuple[float, float, bytes]:
    """Microseconds to format C{message} as a line and to parse it back, and the line."""
    text = formatMessage("s1", message)

    def parse() -> Message:
        _, rest = splitSender(text)
        return parseMessage(rest)

    return (
        microseconds(lambda: formatMessage("s1", message), number, repeat),
        microseconds(parse, number, repeat),
        text.encode("utf-8"),
    )


def main(argv: list[str] | None = None) -> None:
    """Print one row per line: its size, format and parse, then seal and open per version."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REV", help="also time REV's txraft/auth.py")
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(argv)
    versions = {"this tree": auth}
    if options.baseline:
        versions = {options.baseline: loadRevision(options.baseline), **versions}
    print(f"Python {sys.version.split()[0]}; best of {options.repeat} x {options.number} calls")
    header = f"{'line':<14} {'bytes':>5} {'format':>7} {'parse':>7}"
    for name in versions:
        header += f" | {name[:16] + ' seal':>21} {'open':>6} {'share':>6}"
    print(header + "\n" + "-" * len(header))
    for label, message in MESSAGES.items():
        format_, parse, line = timeWire(message, options.number, options.repeat)
        row = f"{label:<14} {len(line):>5} {format_:>7.2f} {parse:>7.2f}"
        for module in versions.values():
            seal, opened = timeSession(module, line, options.number, options.repeat)
            share = (seal + opened) / (seal + opened + format_ + parse)
            row += f" | {seal:>21.2f} {opened:>6.2f} {share:>6.0%}"
        print(row)
    print(
        "µs per line; share: seal + open as a part of seal + open + format + parse "
        "(one line sent and received)"
    )


if __name__ == "__main__":
    main()
