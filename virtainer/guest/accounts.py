"""SSH keys and passwords of the guest's users, through the agent."""

from __future__ import annotations

import secrets

from virtainer.errors import ConfigError
from virtainer.guest.agent import USER_NAME, _agent_needed, _patiently
from virtainer.hypervisor import Domain
from virtainer.validators import check_password


def check_key(key: str) -> str:
    key = key.strip()
    fields = key.split()
    kinds = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")
    if "\n" in key or len(fields) < 2 or not fields[0].startswith(kinds) or len(key) > 16384:
        raise ConfigError("KEY", key[:40], "an OpenSSH public key (ssh-ed25519 AAAA... comment) or a .pub file")
    return key


def list_keys(dom: Domain, user: str) -> list[str]:
    with _agent_needed(dom, "keys list"):
        return _patiently(lambda: dom.authorized_keys(_check_user(user)))


def add_keys(dom: Domain, user: str, keys: list[str]) -> list[str]:
    """Append the keys (those not there yet) to the user's authorized_keys; returns the list."""
    wanted = [check_key(key) for key in keys]
    with _agent_needed(dom, "keys add"):
        present = _patiently(lambda: dom.authorized_keys(_check_user(user)))
        missing = [key for key in dict.fromkeys(wanted) if key not in present]
        if missing:
            _patiently(lambda: dom.change_authorized_keys(user, missing, remove=False))
        return _patiently(lambda: dom.authorized_keys(user))


def remove_keys(dom: Domain, user: str, keys: list[str]) -> list[str]:
    wanted = [check_key(key) for key in keys]
    with _agent_needed(dom, "keys remove"):
        present = _patiently(lambda: dom.authorized_keys(_check_user(user)))
        # match on type and key material: the comment may differ
        material = {tuple(key.split()[:2]) for key in wanted}
        found = [key for key in present if tuple(key.split()[:2]) in material]
        if found:
            _patiently(lambda: dom.change_authorized_keys(user, found, remove=True))
        return _patiently(lambda: dom.authorized_keys(user))


def set_password(dom: Domain, user: str, password: str | None = None) -> str:
    """Set the user's password in the guest; random (printable, 20 characters) unless given."""
    password = password if password is not None else secrets.token_urlsafe(15)
    check_password(password)
    with _agent_needed(dom, "password"):
        _patiently(lambda: dom.set_user_password(_check_user(user), password))
    return password


def _check_user(user: str) -> str:
    if not USER_NAME.fullmatch(user):
        raise ConfigError("--user", user, "a user name of the guest, e.g. debian or root")
    return user
