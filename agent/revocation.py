"""RFC 5280 reason codes accepted by `revoke --reason` (a module of its own so the command
line can offer them without importing the protocol stack)."""

REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}
