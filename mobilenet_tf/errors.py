"""The one line a user reads when something fails: TensorFlow's messages without op names or stack
traces, and failed writes (full disk, I/O error, file-size limit) named by path and reason."""

from __future__ import annotations

import errno
import re

# What a failed write reports, as errno values (Python's OSError) and as the text TensorFlow's
# file system layer puts in its messages ("<path>; No space left on device").
WRITE_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EROFS)
_WRITE_REASONS = "|".join(re.escape(__import__("os").strerror(code)) for code in WRITE_ERRNOS)


class UserError(Exception):
    """An error whose message is the one line a user reads: what is wrong, naming the flag or file,
    and what to do. The commands print it as `<command>: error: <message>` and exit 1."""


class WriteFailed(UserError, OSError):
    """A write that the file system refused (ENOSPC, EIO, EFBIG, EDQUOT, EROFS); the message names
    the path, the reason and what to do."""


def tf_message(error: Exception) -> str:
    """The human part of a TensorFlow error: an assertion's own message, without op names, node
    references or the Python stack that graph errors carry ("Detected at node ... File ...")."""
    text = getattr(error, "message", None) or str(error)
    # An assertion's data: "assertion failed: [part] [part]", then TF's "[[{{node ...}}]]".
    asserted = re.search(r"assertion failed: ((?:\[(?!\[|\{\{)[^\]]*\]\s*)+)", text)
    if asserted:
        return " ".join(part.strip() for part in re.findall(r"\[([^\]]*)\]", asserted.group(1)))
    lines, in_stack = [], False
    for line in text.splitlines():
        if line.startswith("Detected at node"):
            in_stack = True
        elif in_stack and (not line.strip() or line[:1].isspace() or line.strip() == "<stack traces unavailable>"):
            continue
        else:
            in_stack = False
            lines.append(line)
    text = re.sub(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:\w+\]( name: \S*)?|Graph execution error:", "", "\n".join(lines))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def write_failure(error: BaseException) -> str | None:
    """'PATH: REASON' when `error` is a write the file system refused, else None.

    TensorFlow writes through temporary names (`ckpt-9_temp/part-...`, `*.tempstate123`); the path
    given is the one the user knows (`ckpt-9`).
    """
    if isinstance(error, WriteFailed):
        return str(error)
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return f"{error.filename or '?'}: {error.strerror}"
    match = re.search(rf"(\S+?);? ({_WRITE_REASONS})", getattr(error, "message", None) or str(error))
    if not match:
        return None
    path = re.sub(r"_temp/part-.*$|\.tempstate\d+$|\.tmp-\d+$", "", match.group(1))
    return f"{path}: {match.group(2)}"
