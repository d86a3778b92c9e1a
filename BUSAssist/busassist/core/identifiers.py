"""What a DICOM header may put into file names and messages: checked UIDs and scrubbed text.

Headers of archives we did not make are untrusted. A UID is used in a file name or an output
folder only when it matches the DICOM UID grammar (``UID_PATTERN``); anything else (a name typed
into the wrong field, ``../``, a null byte, 260 characters) gets a stable stand-in derived from a
hash, so it can neither escape the output folder nor carry a patient's name into a file name.

Patient identifiers never leave the DICOM: ``Redactor`` knows the identifying values of one file
and removes them from any message (ours, pydicom's validation warnings, highdicom's errors)
before it reaches errors.csv or stderr.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: DICOM UID grammar (PS3.5 section 9.1): digit components separated by dots, at most 64 characters.
#: Components with a leading zero break the letter of the standard but are common in vendor UIDs
#: and harmless in a file name, so they are accepted.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_MAX_LENGTH = 64

#: Header attributes whose values identify a patient (PS3.15 Annex E's patient-level subset).
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientAge",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
)
REDACTED = "[redacted]"
#: pydicom and highdicom quote offending values in their validation messages; keep the words, drop the value.
_QUOTED_VALUE = re.compile(r"""(?P<lead>(?:value|Value|VR \w+|name|Name)\b[^'"\n]{0,40}?)(?P<q>['"]).*?(?P=q)""")
#: Shortest identifier fragment that is redacted on its own (a one-letter name part would redact everything).
_MIN_FRAGMENT = 3


def is_valid_uid(value: object) -> bool:
    """True for a non-empty string that obeys ``UID_PATTERN`` and is at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX_LENGTH and UID_PATTERN.fullmatch(value) is not None


def stand_in_name(kind: str, *seeds: str) -> str:
    """A stable, path-safe name for a missing or invalid UID: ``<kind>-<16 hex of SHA-256(seeds)>``."""
    digest = hashlib.sha256("\x00".join((kind, *seeds)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{kind}-{digest}"


def checked_uid(raw: object, keyword: str) -> tuple[str | None, str]:
    """``(uid, note)``: the UID when valid, else ``None`` and a note that names the problem, not the value."""
    if raw is None or str(raw).strip("\x00 ") == "":
        return None, f"{keyword} missing"
    text = str(raw).rstrip("\x00 ")  # DICOM pads UIDs to an even length with a null byte
    if is_valid_uid(text):
        return text, ""
    why = f"longer than {UID_MAX_LENGTH} characters" if len(text) > UID_MAX_LENGTH else "not digits and dots"
    return None, f"{keyword} invalid ({why})"


def _text_values(value: object) -> Iterable[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [text for item in value for text in _text_values(item)]
    return [str(value)]


class Redactor:
    """Removes one file's patient identifiers, and values quoted by validators, from messages."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        fragments: set[str] = set()
        for value in values:
            value = value.strip("\x00 ")
            if len(value) >= _MIN_FRAGMENT:
                fragments.add(value)
            # person names: family^given^middle=ideographic=phonetic; dates also as YYYY-MM-DD
            for part in re.split(r"[\^=\\ ,]+", value):
                if len(part) >= _MIN_FRAGMENT:
                    fragments.add(part)
            if re.fullmatch(r"\d{8}", value):
                fragments.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        # longest first, so a full name goes before its parts
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in sorted(fragments, key=len, reverse=True)), re.IGNORECASE)
            if fragments
            else None
        )

    @classmethod
    def from_dataset(cls, dataset) -> Redactor:
        """The identifiers of a pydicom dataset: raw (Latin-1) and decoded with its Specific Character Set.

        Both forms, because a message may quote either; read with warnings silenced, since reading
        an invalid value warns by quoting it.
        """
        import warnings

        values: list[str] = []
        for keyword in IDENTIFYING_KEYWORDS:
            try:
                element = dataset.get_item(keyword)
                if element is None:
                    continue
                values.extend(_text_values(element.value))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    values.extend(_text_values(dataset[keyword].value))
            except Exception:  # a malformed element or character set: keep what was read
                continue
        return cls(values)

    def __call__(self, message: str) -> str:
        """``message`` on one line, without identifiers or quoted header values."""
        text = " ".join(str(message).split())
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _QUOTED_VALUE.sub(lambda m: f"{m.group('lead')}{REDACTED}", text)
