"""`runtime.uri`: the one splitter behind the source, output and triton:// parsers."""
from __future__ import annotations

import pytest

from runtime.backends.triton_backend import TritonTarget
from runtime.errors import ModelArtifactError, SinkError, SourceError
from runtime.outputs import parse_output
from runtime.sources import parse_uri
from runtime.uri import port_number, split_uri


@pytest.mark.parametrize("text, scheme, host, hostname, port, path, query", [
    ("RTSP://user:pa:ss@cam.local:8554/live/1?tcp", "rtsp", "user:pa:ss@cam.local", "cam.local", "8554", "/live/1",
     "tcp"),
    ("http://@:8080/", "http", "@", "", "8080", "/", ""),  # "@": every interface (outputs)
    ("webrtc://:8555/cam", "webrtc", "", "", "8555", "/cam", ""),
    ("rtp://10.0.0.2:5004?sdp=a.sdp", "rtp", "10.0.0.2", "10.0.0.2", "5004", "", "sdp=a.sdp"),
    ("http://[::1]:80/x", "http", "[::1]", "[::1]", "80", "/x", ""),
    ("http://[::1]/x", "http", "[::1]", "[::1]", "", "/x", ""),
    ("triton://h/model/2", "triton", "h", "h", "", "/model/2", ""),
])
def test_split_uri(text, scheme, host, hostname, port, path, query):
    parts = split_uri(text)
    assert (parts.scheme, parts.host, parts.hostname, parts.port, parts.path, parts.query) == \
        (scheme, host, hostname, port, path, query)


def test_no_scheme_and_ports():
    assert split_uri("clip.mp4") is None and split_uri("/dev/video0") is None
    assert [port_number(text) for text in ("1", "65535", "0", "65536", "", "80a")] == [1, 65535, None, None, None,
                                                                                        None]


def test_the_three_parsers_refuse_a_bad_port_in_their_own_words():
    with pytest.raises(SourceError, match=r"port '99999' is not a number from 1 to 65535; expected rtsp://HOST"):
        parse_uri("rtsp://cam:99999/live")
    with pytest.raises(SinkError, match=r"expected http://HOST:PORT/ with a port"):
        parse_output("http://@:99999/")
    with pytest.raises(ModelArtifactError, match=r"expected triton://HOST\[:PORT\]/NAME"):
        TritonTarget.parse("triton://h:99999/m")
    assert parse_uri("rtsp://user:pa:ss@cam/live").port == 554  # a ":" in the password is not a port
