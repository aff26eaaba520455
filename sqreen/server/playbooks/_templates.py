"""The built-in playbooks: what ``sqreen playbooks init`` writes out, with their sources.

Thresholds follow what the systems this project replaces ship by default (django-axes:
5 failures locks out; Sqreen's and Castle's brute-force and credential-stuffing scenarios;
OWASP's Credential Stuffing and Authentication cheat sheets), set so that a user who mistypes
a password a few times is never blocked.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TEMPLATES"]

TEMPLATES: Final = '''\
# sqreen playbooks: the collector turns events into blocks and alerts by itself.
# Load with `sqreen serve --playbooks playbooks.toml` (or SQREEN_PLAYBOOKS); it is re-read on
# SIGHUP and when the file changes. Try a change on stored history first:
#   sqreen playbooks test playbooks.toml --since 7d
# Set mode = "monitor" to record alerts without blocking anyone.
# Loopback (127.0.0.1, ::1) is never counted where a playbook groups by ip: trying these
# from your own machine blocks no address. Those grouped by user count it (a user's failures
# are theirs whatever the address: behind a proxy the SDKs do not trust, every client is
# 127.0.0.1, and grouping by user still sees the attack). A private address (10/8,
# 172.16/12, 192.168/16, 100.64/10, fc00::/7...) is alerted on, not blocked, as it is most
# often a proxy the SDKs do not trust, which every client would share: set
# block_private = true in a block_ip playbook to block them too.

# webhook_secret = "change-me"   # signs notify posts: X-Sqreen-Signature: t=<time>,v1=<hmac>

[[playbook]]
id = "brute-force-ip"
description = "One IP failing logins quickly (django-axes locks out at 5 failures)."
events = ["auth.login.failure"]
group_by = "ip"
# ipv6_prefix = 64   # an IPv6 address counts (and is blocked) as its /64; 128: each apart
threshold = 5
window = "5m"
action = "block_ip"
duration = "1h"
# notify = ["https://hooks.example.com/sqreen"]

[[playbook]]
id = "brute-force-account"
description = """One account failing many logins, from anywhere: an alert, not a block \
(blocking the account would lock its owner out: the attack's goal if it is a denial)."""
events = ["auth.login.failure"]
group_by = "user"
threshold = 10
window = "1h"
action = "alert"

[[playbook]]
id = "credential-stuffing"
description = """One IP failing on 8 different accounts in 15 minutes: a list of leaked \
credentials tried at a pace that stays under brute-force-ip's 5 failures in 5 minutes \
(OWASP). At most 13 failures fit in 15 minutes under brute-force-ip: a threshold above \
that could never be reached (`sqreen playbooks check` says so)."""
events = ["auth.login.failure"]
group_by = "ip"
distinct = "user"
threshold = 8
window = "15m"
action = "block_ip"
duration = "6h"

[[playbook]]
id = "password-spray"
description = """One IP failing on many accounts, slowly: a few passwords tried on each \
(every account counts, however many tries: a third try on each does not hide a spray)."""
events = ["auth.login.failure"]
group_by = "ip"
distinct = "user"
# max_per_value = 2   # count only the accounts tried at most twice (a narrower rule)
threshold = 10
window = "1h"
action = "block_ip"
duration = "6h"

[[playbook]]
id = "account-takeover"
description = "A successful login after 10 or more failures on the account in 10 minutes."
events = ["auth.login.success"]
after = { events = ["auth.login.failure"], threshold = 10 }
group_by = "user"
threshold = 1
window = "10m"
action = "alert"

[[playbook]]
id = "signup-abuse"
description = "Five or more sign-ups from one IP in 10 minutes (fake accounts)."
events = ["auth.signup"]
group_by = "ip"
threshold = 5
window = "10m"
action = "block_ip"
duration = "1h"
'''
