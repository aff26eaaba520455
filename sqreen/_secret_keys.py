"""The names of secrets: the vocabulary of :mod:`sqreen._scrub`'s two key rules.

Kept apart from the rules themselves so that the list can be read (and extended) on its own;
the module's docstring in :mod:`sqreen._scrub` says how each list is matched.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "CONTAINED",
    "DEFAULT_SENSITIVE_KEYS",
    "MAX_JOINED",
    "NEVER_COLLECTED_HEADERS",
    "SECRET_PROPERTY_KEYS",
    "SECRET_QUALIFIERS",
    "SUFFIXES",
    "TOKEN_RE",
]

DEFAULT_SENSITIVE_KEYS: Final = frozenset(
    {
        "password",  # password, user_password, passwordConfirm, new-password
        "passwd",  # the Unix spelling
        "pwd",  # the usual abbreviation
        "pass",  # pass, user_pass ("passage", "compass" are other tokens)
        "passphrase",  # key and wallet passphrases
        "secret",  # secret, client_secret, secret_key
        "token",  # token, auth_token, access_token ("tokenizer" is another token)
        "jwt",  # a JSON Web Token under its own name
        "bearer",  # a bearer credential
        "auth",  # auth, x-auth, auth_token ("author", "authority" are other tokens)
        "authorization",  # the header's name used as a key
        "apikey",  # apikey, api_key, apiKey, X-Api-Key (joined tokens)
        "cookie",  # cookie, set_cookie
        "session",  # session, session_key (also session_count: accepted over-scrub)
        "sessionid",  # sessionid, session_id, sessionId
        "csrf",  # csrf, csrf_token, csrfmiddlewaretoken (contained)
        "xsrf",  # XSRF-TOKEN (Angular)
        "signature",  # request and webhook signatures, X-Amz-Signature
        "otp",  # one-time passwords: otp, otp_code
        "totp",  # time-based one-time passwords
        "pin",  # card and phone PINs ("pinned", "spinner", "opinion" are other tokens)
        "cvv",  # card verification value (cvv, cvv2)
        "cvc",  # card verification code (cvc, cvc2)
        "ssn",  # US social security number
        "iban",  # international bank account number
        "cardnumber",  # card_number, cardNumber (joined tokens)
        "creditcard",  # credit_card, creditCard (joined tokens)
        "privatekey",  # private_key, privateKey (joined tokens)
        "credential",  # credential, X-Amz-Credential
        "credentials",  # credentials blobs
    }
)

#: What an event property may be named when it holds a secret: tokens joined, spelling
#: aside (``api_key``, ``apiKey``, ``API-KEY`` are ``apikey``). The key names a secret when
#: it ends with one of these, qualifiers aside (see :data:`SECRET_QUALIFIERS`).
SECRET_PROPERTY_KEYS: Final = frozenset(
    {
        # passwords, in a few languages and abbreviations
        "password", "passwd", "pwd", "pw", "pswd", "pass", "passphrase", "passcode",
        "passwort", "contrasena", "contraseña", "motdepasse", "senha",
        # tokens and keys
        "secret", "clientsecret", "apisecret", "secretkey", "apikey", "accesskey",
        "accesskeyid", "privatekey", "signingkey", "encryptionkey", "token", "accesstoken",
        "refreshtoken", "idtoken", "authtoken", "sessiontoken", "bearertoken", "csrftoken",
        "xsrftoken", "jwt", "bearer", "authorization", "cookie", "sessionid", "sessid",
        "credential", "credentials", "signature", "mnemonic", "seedphrase",
        # one-time codes
        "otp", "totp", "pin", "mfacode", "otpcode", "twofactorcode", "verificationcode",
        "recoverycode", "backupcode", "securitycode", "authcode",
        # cards, banks, identity numbers
        "cardnumber", "creditcard", "ccnumber", "cardno", "pan", "cvv", "cvv2", "cvc",
        "cvc2", "csc", "cardcode", "iban", "ssn",
    }
)  # fmt: skip
#: Words that may follow a secret's name and keep it a secret.
SECRET_QUALIFIERS: Final = frozenset(
    {
        "confirm", "confirmation", "again", "repeat", "new", "old", "current", "hash",
        "hashed", "digest", "encrypted", "plain", "plaintext", "raw", "value", "1", "2",
    }
)  # fmt: skip

#: Request headers never collected, whatever the options: they are credentials.
NEVER_COLLECTED_HEADERS: Final = frozenset(
    {"authorization", "cookie", "proxy-authorization", "x-api-key"}
)

# Words: "HTTPRequest" is "HTTP" + "Request"; digits apart; other letters (no case) as runs.
TOKEN_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_A-Za-z]+")
CONTAINED: Final = ("password", "passwd", "passwort", "passphrase", "csrf", "xsrf")
SUFFIXES: Final = ("token", "secret", "apikey", "privatekey", "sessionid", "sessid", "cardnumber")
MAX_JOINED: Final = 4
