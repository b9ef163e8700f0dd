"""The rooms file: every bad value refused with the field, the allowed range and the value given."""

from __future__ import annotations

import pytest
from amrwatch.services.hub.config import ConfigError, load

from amrwatch import security


def write(tmp_path, hub: str, room: str):
    p = tmp_path / "rooms.toml"
    p.write_text(f"[hub]\n{hub}\n[[room]]\n{room}\n")
    return p


GOOD_ROOM = 'name = "OR-1"\nbus = "tcp://cart:5556"\ncontrol = "tcp://cart:5557"\nserver_key = "keys/server.key"'


@pytest.mark.parametrize(("hub", "room", "message"), [
    ("stale_after_s = 0.1", GOOD_ROOM, "[hub].stale_after_s: must be a number between 0.5 and 3600; got 0.1"),
    ("port = 70000", GOOD_ROOM, "[hub].port: must be a number between 0 and 65535; got 70000"),
    ("colour = 1", GOOD_ROOM, "unknown setting(s) colour"),
    ("", GOOD_ROOM.replace("tcp://cart:5556", "cart:5556"), "room[0].bus: a tcp://HOST:PORT endpoint"),
    ("", GOOD_ROOM.replace('"OR-1"', '"OR 1"'), "room[0].name: 1-64 of"),
    ("", GOOD_ROOM.replace("keys/server.key", "nope.key"), "room OR-1: server_key must be"),
    ("monitor_proxy_port = 8100", GOOD_ROOM + '\nmonitor = "https://cart:8080/"', "the hub proxies http:// monitors only"),
    ("monitor_proxy_port = 70000", GOOD_ROOM, "[hub].monitor_proxy_port: must be a number between 0 and 65000"),
    ("", GOOD_ROOM + '\narchive = "cart:5553"', "room[0].archive: a tcp://HOST:PORT endpoint of the cart; got "
     "'cart:5553'"),
    ("", GOOD_ROOM + "\narchive = 5553", "room[0].archive: a tcp://HOST:PORT endpoint of the cart; got 5553"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, hub, room, message):
    security.generate(tmp_path / "keys")
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, hub, room))
    assert message in str(err.value)


def test_a_good_file_loads(tmp_path):
    security.generate(tmp_path / "keys", clients=("reader-anna",))
    cfg = load(write(tmp_path, 'key = "keys/reader-anna.key_secret"\nstale_after_s = 3', GOOD_ROOM))
    assert cfg.key_name == "reader-anna" and cfg.rooms[0].name == "OR-1" and cfg.stale_after_s == 3.0
    assert len(cfg.rooms[0].server_key) == 40
    assert cfg.rooms[0].archive is None  # optional: without it, aged-out events are gaps at once
    cfg = load(write(tmp_path, "", GOOD_ROOM + '\narchive = "tcp://cart:5553"'))
    assert cfg.rooms[0].archive == "tcp://cart:5553"
