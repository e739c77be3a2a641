"""``--redact``: mask what looks like a secret in command lines and environments.

Run folders travel (bug reports, CI artifacts), and command lines often carry
credentials: ``--password X``, ``--api-key=X``, ``DB_TOKEN=X cmd``,
``https://user:pass@host``.  The rules are deliberately greedy: masking
``--monkey 3`` by mistake costs little, leaking a token costs a lot.
"""

from __future__ import annotations

import re

MASK = "***"

# An option or variable name that looks like it holds a secret.
_SECRET_NAME = re.compile(r"pass(word|wd|phrase)?|pwd|token|secret|key|credential|auth", re.I)
# --name=value / -name=value / NAME=value (env-style assignment)
_ASSIGN = re.compile(r"^(-{0,2}[A-Za-z_][\w.-]*)=(.*)$", re.S)
# credentials inside a URL: scheme://user:password@host
_URL_CRED = re.compile(r"(?P<pre>[A-Za-z][\w+.-]*://[^/\s:@]*:)[^/\s@]+@")


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lstrip("-")))


def redact_value(name: str, value: str) -> str:
    """The value of variable ``name``, masked when the name looks secret."""
    return MASK if secret_name(name) else _URL_CRED.sub(rf"\g<pre>{MASK}@", value)


def redact_argv(argv: list[str]) -> list[str]:
    """A copy of ``argv`` with the values of secret-looking options masked."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("-"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        m = _ASSIGN.match(arg)
        if m and secret_name(m.group(1)):
            out.append(f"{m.group(1)}={MASK}")
            continue
        if arg.startswith("-") and len(arg) > 1 and secret_name(arg):
            mask_next = True  # --password X: X is the next argument
        out.append(_URL_CRED.sub(rf"\g<pre>{MASK}@", arg))
    return out


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: redact_value(k, v) for k, v in env.items()}
