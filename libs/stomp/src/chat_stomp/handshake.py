"""The CONNECT / CONNECTED exchange: version choice and reading the client's headers."""

from __future__ import annotations

from .events import ConnectRequested
from .exceptions import UnsupportedVersion
from .frames import Frame, Header
from .heartbeat import parse_heartbeat

SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")


def negotiate_version(accept_version: str | None) -> tuple[str, tuple[str, ...]]:
    """Return (chosen version, versions the client listed); no header means STOMP 1.0."""
    if accept_version is None:
        accepted: tuple[str, ...] = ("1.0",)
    else:
        accepted = tuple(v.strip() for v in accept_version.split(",") if v.strip())
    common = [v for v in SUPPORTED_VERSIONS if v in accepted]
    if not common:
        raise UnsupportedVersion("unsupported protocol version", SUPPORTED_VERSIONS)
    return common[-1], accepted


def read_connect(frame: Frame) -> ConnectRequested:
    """Interpret a CONNECT or STOMP frame; raises ProtocolError on bad version or heart-beat."""
    version, accepted = negotiate_version(frame.header("accept-version"))
    # Header names are case-sensitive in STOMP, but clients spell this one both ways.
    authorization = next((v for k, v in frame.headers if k.lower() == "authorization"), None)
    return ConnectRequested(
        frame=frame,
        version=version,
        accepted_versions=accepted,
        login=frame.header("login"),
        passcode=frame.header("passcode"),
        authorization_header=authorization,
        host=frame.header("host"),
        client_heartbeat=parse_heartbeat(frame.header("heart-beat")),
    )


def connected_frame(
    version: str, server_heartbeat: tuple[int, int], server_name: str, user_name: str
) -> Frame:
    """The CONNECTED answer; STOMP 1.0 has no heart-beats, so none is announced there."""
    headers: list[Header] = [("version", version)]
    if version != "1.0":
        headers.append(("heart-beat", f"{server_heartbeat[0]},{server_heartbeat[1]}"))
    headers += [("server", server_name), ("user-name", user_name)]
    return Frame("CONNECTED", tuple(headers))
