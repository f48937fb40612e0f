"""Seed-compatible module: ``from torchannels import torchannel``.

The 2009 TorChannels code used ``torchannel.ChannelMixin``; it is the same
class as :class:`torchannels.ChannelMixin`.
"""

from __future__ import annotations

from .channel import Channel
from .handlers import ChannelMixin
from .session import Subscription

__all__ = ["Channel", "ChannelMixin", "Subscription"]
