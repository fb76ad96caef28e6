"""Threshold cloud bridge: records visits and offers, delivers offers, syncs stores' gateways."""

__version__ = "0.1.0"
