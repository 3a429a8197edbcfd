"""Whether a signing key could be guessed: the check production runs on `JWT_SECRET_KEY` and
`SECRET_KEY`.

Anyone who guesses `JWT_SECRET_KEY` can sign any token, an admin's included; anyone who guesses
`SECRET_KEY` can make confirmation tokens and list cursors. A key is refused when it is
published (in this repository, or a well-known placeholder), when it has few different
characters, or when its estimated randomness is below 256 bits, the strength of 32 random
bytes. The estimate charges each character by the alphabet the key draws from (hex 4 bits,
base64url 6, ...) but a common word, a run such as `0123` or `aaaa`, or a stretch repeated from
earlier in the key only a little: a human-made key full of those falls short however long.

A good key: `python -c 'import secrets; print(secrets.token_urlsafe(48))'` (384 bits).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable

MAKE_A_KEY = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
MIN_KEY_BITS = 256
MIN_DISTINCT_CHARACTERS = 10
# Patterns shorter than these occur by chance in random keys often enough to refuse good keys.
MIN_WORD_LENGTH = 5
MIN_RUN_LENGTH = 5
MIN_REPEAT_LENGTH = 6
WORD_BITS = 12.0  # one word out of a few thousand
PATTERN_BITS = 8.0  # where a run or a repeat starts, and how long it is
# A random key holds a word, a run or a repeat by chance now and then (a 64-digit hex key about
# once in 300): what such a pattern costs the estimate is forgiven up to this much.
CHANCE_PATTERN_BITS = 24.0

_WORDS = """
    about above access account action active admin administrator after again agent alpha
    always amazon another answer apple application april argon around audit august author
    authorization autumn azure backend backup baseball basic batman battery bearer before
    begin being below black blog blue bravo bread brown build business button cache calendar
    castle central change changeme charlie cheese chicken china client cloud cluster company
    computer config configuration connect container content control cookie correct country
    credential credentials crypto customer danger database debug december default delta
    demo deploy deployment design development digest django docker domain donkey dragon
    dummy eagle earth echo email encrypt encryption engine enter environment example
    exchange family february flask flower football forest foxtrot freedom friday friend
    front garden generate generated gateway github golf google green guest hacker happy
    hashing heaven hello helloworld hidden horse hotel house hunter iloveyou important
    india insecure internal internet issuer january jordan juliet july june kilo killer
    kubernetes letmein liberty light lima local localhost login london lover machine
    magic manager march master match matrix maybe merlin message michael mike mobile
    monday money monkey monitor morning mother mustang myapp mysecret network never
    night ninja north november number ocean october office omega orange oscar other
    papa paris passphrase passw password passwords people pepper phone please pokemon
    power prince princess private product production project public purple python qwerty
    qwertyuiop random ranger ready redis region release replace request romeo rotate
    router sample saturday school secret secrets secure security september server service
    session settings shadow sierra signature signing silver simple single slack smile
    snoopy soccer something special spring stage staging staple starwars station steel
    storage strong sunday sunshine super superman system tango temporary tenant testing
    thomas thunder thursday tiger token tokens trustno1 tuesday uniform unsafe update
    value victor water wednesday welcome whatever whiskey white window winter world
    x-ray yankee yellow yourkey zulu
"""
COMMON_WORDS = frozenset(
    word
    for word in _WORDS.split()
    # Words of hex letters only would also be found in random hex keys.
    if len(word) >= MIN_WORD_LENGTH and not set(word) <= set("abcdef")
)
_LONGEST_WORD = max(map(len, COMMON_WORDS))

HEX = set(string.hexdigits)
BASE64URL = set(string.ascii_letters + string.digits + "-_")
CHARACTER_CLASSES = (
    (set(string.ascii_lowercase), 26),
    (set(string.ascii_uppercase), 26),
    (set(string.digits), 10),
    (set("-_"), 2),
    (set(string.punctuation) - set("-_"), 30),
    ({" "}, 1),
)


def _alphabet_size(key: str) -> int:
    """How many characters the key appears to draw from: the classes it uses."""
    characters = set(key)
    if characters <= HEX and (key == key.lower() or key == key.upper()):
        return 16
    if characters <= BASE64URL and key != key.lower() and key != key.upper():
        return 64  # base64url, which some keys happen to draw without a digit or a '-'
    size = sum(count for members, count in CHARACTER_CLASSES if members & characters)
    if any(not character.isascii() for character in key):
        size += 100
    return max(size, 2)


def _word_at(lowered: str, start: int) -> int:
    for length in range(min(_LONGEST_WORD, len(lowered) - start), MIN_WORD_LENGTH - 1, -1):
        if lowered[start : start + length] in COMMON_WORDS:
            return length
    return 0


def _run_at(key: str, start: int) -> int:
    """Length of the run at `start` whose characters step by -1, 0 or +1 (`4321`, `aaaa`)."""
    if start + 1 >= len(key):
        return 1
    step = ord(key[start + 1]) - ord(key[start])
    if step not in (-1, 0, 1):
        return 1
    end = start + 1
    while end < len(key) and ord(key[end]) - ord(key[end - 1]) == step:
        end += 1
    return end - start


def _repeat_at(key: str, start: int) -> int:
    """Length of the longest stretch at `start` that already occurred earlier in the key."""
    length = 0
    while start + length < len(key) and key[start : start + length + 1] in key[: start + length]:
        length += 1
    return length


def estimated_bits(key: str) -> float:
    """A pessimistic estimate of the randomness in `key`, in bits."""
    per_character = math.log2(_alphabet_size(key))
    lowered = key.lower()
    bits = 0.0
    position = 0
    while position < len(key):
        if word := _word_at(lowered, position):
            bits += WORD_BITS
            position += word
        elif (run := _run_at(key, position)) >= MIN_RUN_LENGTH:
            bits += per_character + PATTERN_BITS
            position += run
        elif (repeat := _repeat_at(key, position)) >= MIN_REPEAT_LENGTH:
            bits += PATTERN_BITS
            position += repeat
        else:
            bits += per_character
            position += 1
    return bits


def guessable(key: str, published: Iterable[str]) -> str | None:
    """Why `key` could be guessed (to follow the setting's name in a message), or None."""
    if key.strip().lower() in {known.lower() for known in published}:
        return "is published (it appears in the repository or in examples)"
    distinct = len(set(key))
    if distinct < MIN_DISTINCT_CHARACTERS:
        return f"has only {distinct} different characters"
    alphabet_bits = len(key) * math.log2(_alphabet_size(key))
    if alphabet_bits < MIN_KEY_BITS:
        return (
            f"is too short: {len(key)} characters of its alphabet hold at most "
            f"{alphabet_bits:.0f} bits, {MIN_KEY_BITS} needed (32 random bytes)"
        )
    bits = estimated_bits(key)
    if bits < MIN_KEY_BITS - CHANCE_PATTERN_BITS:
        return (
            f"is guessable: about {bits:.0f} bits of randomness, {MIN_KEY_BITS} needed "
            "(words, runs and repeats count for little)"
        )
    return None
