"""Tools for people trying msrp-gw out (`msrp-gw try`)."""
