"""permessage-deflate (RFC 7692) through wsproto, with two of its gaps closed.

wsproto 1.3 resets a compressed message's state at a control frame between
its fragments, then hands over the rest of the message still deflated
(python-hyper/wsproto PR 205); and it inflates a message whole before any
size check, so a few kB of deflate bomb become hundreds of MB. The
:class:`PerMessageDeflate` here leaves control frames alone and inflates no
more than ``max_size`` bytes of a message.
"""

from __future__ import annotations

import zlib

from wsproto import extensions
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits


class PerMessageDeflate(extensions.PerMessageDeflate):
    """wsproto's permessage-deflate, except that a control frame (a ping,
    say) between the fragments of a compressed message leaves the message's
    compression state alone, and that a message inflates to at most
    ``max_size`` bytes (``Config.max_message_size``; past it, 1009)."""

    _control: bool = False

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if self._control:
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._control:
            return data
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        # Inflate no more than a whole message may hold: a few kB of deflate
        # bomb would otherwise inflate to hundreds of MB before any check.
        try:
            out = self._decompressor.decompress(bytes(data), self.max_size + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._control:
            return None
        return super().frame_inbound_complete(proto, fin)


def accept_offer(offer: bytes, max_size: int) -> tuple[PerMessageDeflate, bytes] | None:
    """The extension and the ``Sec-WebSocket-Extensions`` value that accept
    the first permessage-deflate offer in ``offer`` (the client's headers
    joined with commas), or ``None``: no compression, for no such offer or
    one wsproto declines or cannot parse."""
    deflate = PerMessageDeflate(max_size)
    for item in offer.decode("latin-1").split(","):
        if item.split(";")[0].strip() != deflate.name:
            continue
        try:
            accepted = deflate.accept(item.strip())
        except ValueError:  # a malformed parameter: no compression
            return None
        if accepted is None or accepted is False:
            return None
        # wsproto returns only the parameters ("" for none).
        agreed = deflate.name
        if isinstance(accepted, str) and accepted:
            agreed += "; " + accepted
        return deflate, agreed.encode()
    return None
