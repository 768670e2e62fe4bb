"""Spellings of the same schedule made one, before the grammar reads a phrase.

'workday' is 'weekday', 'half past six' is '6:30', 'every 1.5 hours' is 'every 90
minutes', 'two and a half' is '2.5', 'three times a week on Mon, Wed and Fri' is 'every
Mon, Wed and Fri'. Kept apart from the grammar table (``phrases``) so that the table reads
one spelling of each thing. Words with two common readings ('biweekly') get a note saying
which one is taken. Pure.
"""

from __future__ import annotations

import re

from scheduler_service.schedules.words import (
    DAY_LIST,
    DAY_WORD,
    NTH_DAY,
    NUMBER_WORDS,
    PhraseError,
    parse_day_list,
)

_HOUR_NAME = r"(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_HOUR_WORD = rf"(\d{{1,2}}|{_HOUR_NAME[1:-1]})"
COUNTS = {"once": 1, "twice": 2, "three times": 3, "four times": 4, "five times": 5}
COUNT = r"(?P<k>once|twice|three times|four times|five times)"


def _hour(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def _clock_words(m: re.Match[str]) -> str:
    """'half past six' → '6:30', 'quarter to 9' → '8:45', 'quarter past 10' → '10:15'."""
    hour = _hour(m[3])
    if m[2] in ("to", "before"):
        hour = hour - 1 if hour > 1 else 12
        return f"{hour}:{60 - (30 if m[1] == 'half' else 15):02d}"
    return f"{hour}:{30 if m[1] == 'half' else 15:02d}"


def _hours_to_minutes(m: re.Match[str]) -> str:
    """'every 1.5 hours' → 'every 90 minutes' (a whole number of minutes, else refused)."""
    minutes = float(m[1]) * 60
    if minutes != int(minutes):
        raise PhraseError(f"'{m[0]}' is not a whole number of minutes; say e.g. 'every 90 minutes'")
    return f"every {int(minutes)} minutes"


def normalize(text: str) -> str:
    """Lower case, single spaces, a.m./p.m. → am/pm, 'each' → 'every', no o'clock, and
    the spellings of the same thing made one ('workday' → 'weekday', 'half past six' →
    '6:30', 'every 1.5 hours' → 'every 90 minutes', 'two and a half' → '2.5')."""
    s = " ".join(text.lower().replace("–", "-").replace("&", " and ").split())
    s = re.sub(r"\b([ap])\.m\.?", r"\1m", s).rstrip(".").strip()
    s = re.sub(r"\b(\d{1,2}(?::\d{2})?) ?o'?clock\b", r"\1", s)
    s = re.sub(r"\beach\b", "every", s)
    s = re.sub(r"\bhourly\b", "every hour", s)
    s = re.sub(r"\b(?:biweekly|bi-weekly|fortnightly|every fortnight)\b", "every 2 weeks", s)
    s = re.sub(r"\b(?:bimonthly|bi-monthly)\b", "every 2 months", s)
    s = re.sub(
        r"\b(first|last) (?:working|work|business|week) ?days? of\b", r"\1 business day of", s
    )
    s = re.sub(r"\b(?:working days?|work ?days?|week ?days)\b", "weekdays", s)
    s = re.sub(r"\bevery single\b", "every", s)
    s = re.sub(rf"\b({DAY_WORD}) ?/ ?(?=(?:{DAY_WORD})\b)", r"\1, ", s)  # mon/wed/fri
    s = re.sub(
        r"\b(?:during|in|within) (?:the )?(?:business|office|working|work) hours\b",
        "between 9:00 and 17:00 on weekdays",
        s,
    )
    s = re.sub(r"\b(second|third|next)[- ]to[- ]last\b", r"\1-to-last", s)
    s = re.sub(r"\bpenultimate\b", "second-to-last", s)
    s = re.sub(
        r"\b(?:mins?|minutes?)\b", lambda m: "minutes" if m[0].endswith("s") else "minute", s
    )
    s = re.sub(r"\b(?:hrs?)\b", "hours", s)
    s = re.sub(r"\bevery half(?: an|-)? ?hour\b", "every 30 minutes", s)
    s = re.sub(r"\bevery quarter(?: of an|-)? ?hour\b", "every 15 minutes", s)
    s = re.sub(r"\b(?:an|one) hour and a half\b", "1.5 hours", s)
    s = re.sub(rf"\b{_HOUR_WORD} and a half\b", lambda m: f"{_hour(m[1])}.5", s)
    s = re.sub(r"\bevery (\d+\.\d+) hours?\b", _hours_to_minutes, s)
    s = re.sub(rf"\b(half|quarter) (past|after|to|before) {_HOUR_WORD}\b", _clock_words, s)
    s = re.sub(rf"\bat {_HOUR_NAME}\b", lambda m: f"at {_hour(m[1])}", s)
    s = re.sub(
        r"\bon the half[- ]hour\b|\bat half past( every hour| the hour)?\b", "at minute 30", s
    )
    s = re.sub(r"\bon the hour\b", "at minute 0", s)
    s = re.sub(r"\bat :(\d{2})\b", r"at minute \1", s)
    s = re.sub(r"\bat (\d{1,2}) (?:minutes )?past(?: the hour)?\b", r"at minute \1", s)
    return s


def reading_notes(text: str) -> tuple[str, ...]:
    """Words with two common readings: say which one was taken."""
    notes = []
    if re.search(r"\bbi-?weekly\b", text):
        notes.append(
            "'biweekly' is read as every 2 weeks (not twice a week); for twice a week name "
            "the days, e.g. 'every monday and thursday at 9'"
        )
    if re.search(rf"\bevery (?:second|2nd|third|3rd|fourth|4th) (?:{DAY_WORD})\b(?! of| in)", text):
        notes.append(
            "'every second …' is read as that weekday of each month (the 2nd Tuesday …); "
            "for every two weeks say 'every other tuesday'"
        )
    if re.search(NTH_DAY, text) and not re.search(r"\b(?:every|each|annually|yearly)\b", text):
        notes.append(
            "a weekday of a named month repeats every year; for one time give the date "
            "(e.g. 'October 12 at 9am')"
        )
    if re.search(r"\b(?:business|office|working|work) hours\b", text):
        notes.append(
            "'business hours' is read as 09:00–17:00 (both included), Monday–Friday; give a "
            "window such as 'between 8 and 18 on weekdays' to choose others"
        )
    if re.search(r"\bbi-?monthly\b", text):
        notes.append(
            "'bimonthly' is read as every 2 months (not twice a month); for twice a month "
            "name the days, e.g. 'on the 1st and 15th at 9'"
        )
    return tuple(notes)


def times_a_week(s: str) -> str:
    """'three times a week on mon, wed and fri' → 'every mon, wed and fri' (the count must
    match the days); without days the phrase cannot say which, so it is refused."""
    m = re.search(rf"\b{COUNT} (?:a|per|every) week(?: on (?P<days>{DAY_LIST}))?", s)
    if m is None:
        return s
    if m["days"] is None:
        raise PhraseError(
            f"'{m[0]}' does not say which days; name them, e.g. 'every monday, wednesday "
            "and friday at 9'"
        )
    days = parse_day_list(m["days"])
    if len(days) != COUNTS[m["k"]]:
        raise PhraseError(f"'{m[0]}' names {len(days)} day(s); give {COUNTS[m['k']]}")
    return s[: m.start()] + f"every {m['days']}" + s[m.end() :]
