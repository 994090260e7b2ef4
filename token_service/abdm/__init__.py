"""ABDM adapter: inbound share parsing and JWT checks, the outbound gateway client, and a gateway sandbox."""
