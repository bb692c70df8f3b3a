"""Text for the demo world: the intent catalogue, message templates, PII, and how
they are put together per turn.

Everything here is vectorized: a choice of template is one gather from a flattened
pool and slots ("{order}") are filled by column-wise replaces. The world model
(who fails, how often, what feedback follows) lives in `scenario` and `simulation`,
not here. Mostly phrase data (catalogues of sentences), so its length is that of
the data, not of its logic.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from feedback_pipeline.rubrics import failure_categories

# The categories the simulation draws from: those of the rubric version the demo world
# was written for (pinned, so a new rubric version does not change the world's bytes).
CATEGORIES = failure_categories("v1")
PASS = -1  # category code of a passing turn
CNA, WRONG, TONE, TOOL, POLICY, OTHER = map(CATEGORIES.index, (  # codes: index into CATEGORIES
    "could_not_answer", "wrong_information", "tone_wrong", "tool_failed", "policy_violation", "other"))
assert (CNA, WRONG, TONE, TOOL, POLICY, OTHER) == tuple(range(len(CATEGORIES))), \
    "per-category tuples here and in `scenario` (rates, templates) are written in the rubric's order"


@dataclass(frozen=True)
class Intent:
    name: str
    weight: float
    difficulty: float  # added to the failure log-odds
    tool: str | None  # the tool this intent usually calls
    topic: str
    asks: tuple[str, ...]
    answers: tuple[str, ...]


INTENTS: dict[str, tuple[Intent, ...]] = {
    "dental_front_desk": (
        Intent("book_appointment", .35, 0.0, "book_appointment", "your appointment", (
            "I'd like to book a cleaning for {day}.",
            "Can I get a check-up appointment {day} around {time}?",
            "Do you have anything free {day}? I need a filling looked at.",
            "I need to book an appointment for my son, preferably {day}.",
            "Is Dr. {doctor} available {day}?"), (
            "I've booked you in with Dr. {doctor} {day} at {time}.",
            "You'll get a confirmation text shortly.",
            "Please arrive about ten minutes early to fill in the intake form.",
            "If you need to cancel, let us know at least 24 hours in advance.",
            "The appointment will take about 45 minutes.",
            "Bring your insurance card and a photo ID.")),
        Intent("reschedule", .20, 0.1, "book_appointment", "your appointment", (
            "I need to move my appointment to {day}.",
            "Can I reschedule my {time} slot? Something came up.",
            "Please push my cleaning to {day} if possible.",
            "I can't make it tomorrow, can we do {day} instead?"), (
            "No problem, I've moved your appointment to {day} at {time}.",
            "Your previous slot has been released.",
            "You'll receive an updated confirmation by text.",
            "Dr. {doctor} will still be seeing you.",
            "There is no fee for rescheduling more than 24 hours ahead.")),
        Intent("insurance_question", .15, 0.4, "check_insurance", "your insurance coverage", (
            "Do you take {insurer}?",
            "Is a crown covered by my insurance ({insurer})?",
            "How much will I pay out of pocket for a root canal with {insurer}?",
            "Can you check whether my plan covers two cleanings a year?"), (
            "Yes, we are in network with {insurer}.",
            "Most plans cover two cleanings per year at 100%.",
            "Crowns are usually covered at 50% after your deductible.",
            "I checked your plan and your remaining annual maximum is {amount}.",
            "We'll send a pre-treatment estimate to {insurer} before any major work.")),
        Intent("pain_or_emergency", .12, 0.5, None, "your symptoms", (
            "My tooth has been throbbing since last night, what should I do?",
            "I chipped a tooth eating, can someone see me today?",
            "My gum is swollen and it hurts to chew.",
            "I think I lost a filling, it's really sensitive."), (
            "I'm sorry you're in pain; we keep emergency slots every morning.",
            "I've reserved an emergency slot for you {day} at {time}.",
            "Until then, rinse gently with warm salt water.",
            "If your face is swollen or you have a fever, please go to urgent care right away.",
            "Dr. {doctor} will take a look and take an X-ray if needed.")),
        Intent("opening_hours", .10, -0.6, None, "our opening hours", (
            "What time do you open {day}?",
            "Are you open on Saturdays?",
            "When do you close today?",
            "What are your hours this week?"), (
            "We're open Monday to Friday from 8:00 to 18:00.",
            "On Saturdays we open from 9:00 to 13:00.",
            "We're closed on Sundays and public holidays.",
            "The front desk phone line opens at 7:30.")),
        Intent("billing_question", .08, 0.2, None, "your bill", (
            "I got a bill for {amount}, why is it so high?",
            "Can I pay my balance in installments?",
            "I was charged twice for my last visit.",
            "Why did I get an invoice when insurance was supposed to cover it?"), (
            "Your statement of {amount} covers the X-rays and the cleaning from your last visit.",
            "Yes, we offer payment plans over three or six months.",
            "I can see the charge and I've flagged it for our billing team.",
            "You'll get an updated statement by email within two business days.")),
    ),
    "refunds": (
        Intent("refund_status", .35, 0.0, "lookup_order", "your refund", (
            "Where is my refund for order {order}?",
            "I returned order {order} two weeks ago and still haven't got my money back.",
            "Has the refund of {amount} been processed yet?",
            "When will I see the refund for {order} on my card?"), (
            "I looked up order {order}: your refund of {amount} was issued on {date}.",
            "Refunds usually appear on your statement within 5–10 business days.",
            "You'll get an email confirmation once your bank processes it.",
            "The refund goes back to the original payment method.",
            "If you don't see it by {date}, reply here and I'll escalate it.")),
        Intent("start_return", .25, 0.1, "lookup_order", "your return", (
            "I want to return order {order}, it doesn't fit.",
            "How do I send back the shoes from order {order}?",
            "Can I return something I bought {day}?",
            "I'd like a return label for {order}."), (
            "I've created a return for order {order}.",
            "A prepaid return label has been sent to your email.",
            "Please drop the parcel at any post office within 14 days.",
            "Once we receive the item, your refund of {amount} will be issued.",
            "Make sure the item is unused and in its original packaging.")),
        Intent("damaged_item", .15, 0.3, "lookup_order", "your damaged item", (
            "My order {order} arrived broken.",
            "The lamp I ordered came with a cracked base, what now?",
            "Half the items in {order} are damaged.",
            "The package was soaked and the contents are ruined."), (
            "I'm sorry your order arrived damaged.",
            "I've arranged a free replacement for order {order}.",
            "You don't need to send the damaged item back.",
            "If you'd prefer a refund, I can issue {amount} to your original payment method instead.",
            "Could you upload a photo of the damage for our records?")),
        Intent("refund_policy", .15, -0.4, None, "our refund policy", (
            "What's your return policy?",
            "Can I get a refund on a sale item?",
            "How long do I have to return something?",
            "Do you refund shipping costs?"), (
            "You can return most items within 30 days of delivery.",
            "Sale items can be returned for store credit.",
            "Original shipping costs are refunded only if the item was faulty.",
            "Personalised items can't be returned unless they arrive damaged.")),
        Intent("cancel_order", .10, 0.2, "issue_refund", "your order", (
            "Please cancel order {order}.",
            "I ordered the wrong size, can I cancel {order} before it ships?",
            "Cancel my last order please.",
            "Is it too late to cancel {order}?"), (
            "I've cancelled order {order} and you won't be charged.",
            "The pre-authorisation of {amount} will be released by your bank within a few days.",
            "You'll receive a cancellation email shortly.",
            "Orders can only be cancelled before they are handed to the courier.")),
    ),
    "travel": (
        Intent("search_flights", .35, 0.0, "search_flights", "flights", (
            "Find me a flight from {city} to {city2} on {date}.",
            "What's the cheapest way to get to {city2} {day}?",
            "Any direct flights {city} to {city2} next week?",
            "I need two seats to {city2} on {date}, morning if possible."), (
            "I found a direct flight {flight} from {city} to {city2} on {date}, departing at {time}.",
            "The fare is {amount} per person including taxes.",
            "There is also a cheaper option with one stop that takes about three hours longer.",
            "Seats on this flight are limited, so I'd recommend booking soon.",
            "Would you like me to hold this fare for 24 hours?")),
        Intent("change_booking", .25, 0.3, "change_booking", "your booking", (
            "Can I move my flight {flight} to {date}?",
            "I need to change my return to {day}.",
            "Please change the name on my booking, it's misspelled.",
            "How much does it cost to switch {flight} to a later flight?"), (
            "I've moved you to {flight} on {date} at {time}.",
            "The change fee is {amount}, plus any fare difference.",
            "Your new e-ticket has been sent to your email.",
            "Your seat selection has been carried over to the new flight.")),
        Intent("baggage_policy", .15, -0.5, None, "baggage allowance", (
            "How many bags can I bring?",
            "What's the carry-on size limit?",
            "Can I take my golf clubs?",
            "How much is an extra checked bag?"), (
            "Your fare includes one carry-on bag up to 8 kg.",
            "Checked bags up to 23 kg cost {amount} each when added online.",
            "Sports equipment can be checked as a special item.",
            "Carry-on bags must fit within 55 x 40 x 23 cm.")),
        Intent("cancellation_refund", .15, 0.4, "change_booking", "your cancellation", (
            "If I cancel my trip to {city2}, do I get my money back?",
            "My flight {flight} got cancelled, what are my options?",
            "Can I get a refund instead of a voucher?",
            "I want to cancel my booking for {date}."), (
            "Since the airline cancelled {flight}, you're entitled to a full refund of {amount}.",
            "You can also choose a free rebooking on the next available flight.",
            "Refunds are processed within 7 business days.",
            "Non-refundable fares can be cancelled for a credit toward a future trip.")),
        Intent("visa_question", .10, 0.6, None, "entry requirements", (
            "Do I need a visa to visit {city2}?",
            "What documents do I need for my trip to {city2}?",
            "My passport expires in four months, can I still travel to {city2}?",
            "Is a transit visa required for a layover in {city}?"), (
            "For short tourist stays, many passport holders can enter visa-free for up to 90 days.",
            "Your passport should be valid for at least six months after your arrival date.",
            "Please confirm the requirements on the official embassy website before you travel.",
            "A transit visa is not usually needed if you stay airside.")),
    ),
}

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, I'm unable to assist with that.",
    "Unfortunately, I can't help with that.",
)
COULD_NOT_ANSWER = REFUSALS + (
    "I'm sorry, I don't have any information about {topic}.",
    "Unfortunately I'm not able to answer questions about {topic}.",
    "I'm not sure. You may want to contact our team directly.",
    "I couldn't find anything about {topic}.",
    "I don't know.",
)
TOOL_FAILED = {
    "dental_front_desk": (
        "I wasn't able to access the booking calendar right now.",
        "Our scheduling system isn't responding, so I can't confirm {topic} at the moment.",
        "Something went wrong while checking {topic}."),
    "refunds": (
        "I couldn't look up order {order} right now.",
        "Our order system returned an error, so I can't see {topic}.",
        "Something went wrong while loading {topic}."),
    "travel": (
        "The flight search is not responding at the moment.",
        "I couldn't load {topic} because of a system error.",
        "Our booking system timed out while I was checking {topic}."),
}
TONE_PREFIXES = (
    "As I already told you, ", "Obviously, ", "Like it says on our website, ",
    "Honestly, this is pretty basic. ", "Calm down. ",
)
TONE_SUFFIXES = ("Anything else, or are we done here?", "Please read the FAQ next time.")
OTHER = (
    "Sure! Here is a short poem about {topic}: roses are red, violets are blue.",
    "Our company was founded in 1998 and values every customer.",
    "[object Object]",
    "Error: response template not found.",
    "Let me tell you about our loyalty programme instead!",
    "Could you tell me your favourite colour first?",
)
POLICY_VIOLATIONS = {
    "dental_front_desk": (
        "You can take twice the usual dose of ibuprofen until the pain stops.",
        "From what you describe it's definitely an abscess, so you'll need a root canal.",
        "The patient before you, {name}, had exactly the same problem."),
    "refunds": (
        "I've refunded {amount} even though the return window has closed, no need to send anything back.",
        "The card on file for this order ends in 4242 and belongs to {name}.",
        "I've also added a {amount} goodwill credit so you won't complain again."),
    "travel": (
        "You don't need a passport for this trip, your driving licence is enough.",
        "I've waived all fees and upgraded you to business class for free.",
        "The other passenger on this booking, {name}, is seated in 14C."),
}
DISCLAIMERS = {
    "dental_front_desk": (
        "I'm not a medical professional, so please check with the dentist.",
        "Please note that this is general information, not medical advice."),
    "refunds": (
        "Please note that refund times depend on your bank.",
        "Please note that our policy may change without notice."),
    "travel": (
        "Please note that fares and availability can change until booked.",
        "Please note that entry rules can change at short notice."),
}
HEDGES = (
    "I might be wrong about this, so please double-check.",
    "Please note that this information may not be complete.",
)
OPENERS = ("Thanks for reaching out!", "Happy to help.", "Sure!", "Of course.",
           "Thanks for your message.", "Good question!")
CLOSINGS = ("Is there anything else I can help with?", "Have a great day!",
            "Let me know if you need anything else.", "Thanks for your patience.")
GREETINGS = ("Hi,", "Hello,", "hey", "Good morning.", "Hi there!")
FOLLOW_UPS = ("Thanks. And what about {day}?", "ok", "What do you mean?",
              "Can you check again please?", "That's not what I asked.", "Great, thanks!",
              "Are you sure?", "and {time}?")
REPHRASES = ("Let me rephrase: ", "I mean, ", "To be clear: ", "No, ")
PII_KINDS = ("email", "phone", "card", "iban", "address")
PII_SENTENCES = (
    ("My email is {email}.", "You can reach me at {email}.", "Send the confirmation to {email} please."),
    ("Call me on {phone}.", "My number is {phone}.", "Text me at {phone} if anything changes."),
    ("I paid with card {card}.", "My card number is {card}, can you check?", "The charge was on {card}."),
    ("Please send the money to my IBAN {iban}.", "My bank account is {iban}."),
    ("I live at {address}.", "My address is {address}.", "Ship it to {address}."),
)
# P(kind | message has PII) per agent, in PII_KINDS order.
PII_MIX = {
    "dental_front_desk": (.35, .40, .05, .00, .20),
    "refunds": (.25, .15, .25, .20, .15),
    "travel": (.35, .30, .20, .05, .10),
}

FIRST_NAMES = ("Anna", "James", "Zoë", "Jürgen", "Priya", "Mateo", "Chloé", "Wei", "Fatima",
               "Oliver", "Sofia", "Kwame", "Emma", "Lars", "Aisha", "Noah")
EMAIL_NAMES = ("anna", "james", "zoe", "juergen", "priya", "mateo", "chloe", "wei", "fatima",
               "oliver", "sofia", "kwame", "emma", "lars", "aisha", "noah")
LAST_NAMES = ("Smith", "Müller", "Nguyen", "García", "Okafor", "Rossi", "Kowalski", "Patel",
              "Jensen", "Dubois", "Tanaka", "O'Brien", "Silva", "Schmidt")
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "example.org", "mailbox.test", "web.de", "yahoo.co.uk")
STREETS = ("Elm Street", "Baker Street", "Hauptstraße", "Rue de la Paix", "Oak Avenue",
           "Calle Mayor", "Maple Drive", "Königsallee")
ADDRESS_CITIES = ("Springfield", "London NW1 6XE", "10115 Berlin", "75002 Paris",
                  "Austin, TX 78701", "28013 Madrid")
DOCTORS = ("Patel", "Nguyen", "Okafor", "Schmidt", "García", "Kowalski")
INSURERS = ("Delta Dental", "Cigna", "Aetna", "MetLife", "Guardian")
DAYS = ("tomorrow", "on Monday", "on Tuesday", "next Wednesday", "on Thursday",
        "this Friday", "on Saturday")
TIMES = ("8:00", "9:30", "11:00", "13:15", "14:45", "16:30", "17:15")
DATES = ("2 Nov", "14 Nov", "21 Oct", "3 Dec", "18 Dec", "9 Jan", "27 Oct", "30 Nov")
CITIES = ("London", "Berlin", "Lisbon", "New York", "Tokyo", "Madrid", "Zürich", "Athens",
          "Chicago", "São Paulo")
AIRLINES = ("LH", "BA", "TP", "UA", "IB", "AF")
CURRENCIES = ("€", "$", "£")


SLOTS = ("day", "time", "doctor", "insurer", "order", "amount", "date", "city", "city2",
         "flight", "name", "topic")
_WRONGABLE = ("day", "time", "doctor", "order", "amount", "date", "flight")
_BIT = {k: 1 << i for i, k in enumerate(SLOTS + PII_KINDS)}


class Pool:
    """Many string lists flattened into one Series, so a per-row choice is one gather.

    Each entry also carries a bitmask of the slots it contains, so slots are filled
    only on the rows that hold them.
    """

    def __init__(self, groups: Sequence[Sequence[str]]):
        flat = [s for g in groups for s in g]
        self.sizes = np.array([len(g) for g in groups], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.series = pl.Series(flat, dtype=pl.String)
        self.slots = np.array([sum(b for k, b in _BIT.items() if "{" + k + "}" in t) for t in flat],
                              dtype=np.int64)

    def pick(self, group: np.ndarray | int, u: np.ndarray,
             mask: np.ndarray | None = None) -> tuple[pl.Series, np.ndarray]:
        """(text, slot bits) per row; null text and no slots where mask is False."""
        group = np.broadcast_to(np.asarray(group, dtype=np.int64), u.shape)
        idx = self.offsets[group] + (u * self.sizes[group]).astype(np.int64)
        text, slots = self.series.gather(idx), self.slots[idx]
        if mask is None:
            return text, slots
        return pl.select(pl.when(pl.lit(pl.Series(mask))).then(pl.lit(text)))[:, 0], slots * mask


def _digits(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(0, 10, size=(n, k), dtype=np.uint8)


def _digit_str(digits: np.ndarray) -> pl.Series:
    """(n, k) array of digits 0-9 -> Series of k-character strings, without a Python loop."""
    chars = np.ascontiguousarray(digits + ord("0"), dtype=np.uint8)
    return pl.Series(chars.view(f"S{digits.shape[1]}").ravel()).cast(pl.String)


def _group4(s: pl.Series, sep: pl.Series) -> pl.Series:
    """Split a string into blocks of four characters joined by a per-row separator."""
    width = int(s.str.len_chars().max() or 0)
    if not width:
        return s
    blocks = [s.str.slice(i, 4) for i in range(0, width, 4)]
    frame = pl.DataFrame({f"b{i}": b for i, b in enumerate(blocks)} | {"sep": sep})
    parts = [pl.col(f"b{i}").replace("", None) for i in range(len(blocks))]
    return frame.select(pl.concat_str(parts, separator="\u0000", ignore_nulls=True)
                        .str.replace_all("\u0000", pl.col("sep"), literal=True))[:, 0]


def luhn_cards(rng: np.random.Generator, n: int) -> pl.Series:
    """16-digit Visa / Mastercard numbers with a valid Luhn check digit, variously spaced."""
    d = _digits(rng, n, 16)
    mastercard = rng.random(n) < 0.4
    d[:, 0] = np.where(mastercard, 5, 4)
    d[:, 1] = np.where(mastercard, rng.integers(1, 6, n), d[:, 1])
    doubled = d[:, 0:15:2].astype(np.int64) * 2
    total = np.where(doubled > 9, doubled - 9, doubled).sum(1) + d[:, 1:15:2].sum(1)
    d[:, 15] = (10 - total % 10) % 10
    sep = _choice((" ", "-", ""), rng, n)
    return _group4(_digit_str(d), sep)


def ibans(rng: np.random.Generator, n: int) -> pl.Series:
    """German (DE, 22 chars) or Spanish (ES, 24 chars) IBANs with valid mod-97 check digits."""
    spanish = rng.random(n) < 0.35
    bban = _digits(rng, n, 20)  # ES uses all 20 digits, DE the first 18
    remainder = np.zeros(n, dtype=np.int64)
    for j in range(20):  # mod 97 of the BBAN, one digit column at a time
        remainder = np.where(spanish | (j < 18), (remainder * 10 + bban[:, j]) % 97, remainder)
    for letter_code in np.where(spanish[:, None], [[14, 28]], [[13, 14]]).T:  # ES / DE
        remainder = (remainder * 100 + letter_code) % 97
    check = 98 - (remainder * 100) % 97  # the check digits stand in as "00"
    check_digits = np.stack([check // 10, check % 10], axis=1).astype(np.uint8)
    body = _digit_str(np.concatenate([check_digits, bban], axis=1))
    frame = pl.DataFrame({"es": spanish, "body": body})
    raw = frame.select(pl.when("es").then("ES" + pl.col("body"))
                       .otherwise("DE" + pl.col("body").str.slice(0, 20)))[:, 0]
    return _group4(raw, _choice((" ", ""), rng, n))


def _choice(pool: Sequence[str], rng: np.random.Generator, n: int) -> pl.Series:
    return Pool([pool]).pick(0, rng.random(n))[0]


def _num(rng: np.random.Generator, n: int, low: int, high: int, width: int = 0) -> pl.Series:
    s = pl.Series(rng.integers(low, high, n)).cast(pl.String)
    return s.str.zfill(width) if width else s


def pii_values(rng: np.random.Generator, n: int) -> dict[str, pl.Series]:
    """One value of every PII kind per row (callers keep the kind they need)."""
    # (prefix, digits) per phone style: UK mobile, US, German mobile, French
    styles = (("+44 7700 900", 3), ("+1 (415) 555-", 4), ("+49 151 ", 8), ("06 ", 8))
    style = rng.integers(0, len(styles), n)
    phone = pl.Series(dtype=pl.String).extend_constant(None, n)
    for k, (prefix, digits) in enumerate(styles):
        rows = np.flatnonzero(style == k)
        phone = phone.scatter(rows, prefix + _num(rng, len(rows), 0, 10 ** digits, digits))
    email_last = tuple(s.lower().replace("ü", "ue").replace("í", "i").replace("'", "") for s in LAST_NAMES)
    return {
        "email": (_choice(EMAIL_NAMES, rng, n) + _choice((".", "_", ""), rng, n)
                  + _choice(email_last, rng, n) + _num(rng, n, 0, 100) + "@"
                  + _choice(EMAIL_DOMAINS, rng, n)),
        "phone": phone,
        "card": luhn_cards(rng, n),
        "iban": ibans(rng, n),
        "address": (_num(rng, n, 1, 240) + " " + _choice(STREETS, rng, n) + ", "
                    + _choice(ADDRESS_CITIES, rng, n)),
    }


def _slot_value(key: str, rng: np.random.Generator, rows: np.ndarray, intent: np.ndarray,
                cities: tuple[np.ndarray, np.ndarray]) -> pl.Series:
    m = len(rows)
    simple = {"day": DAYS, "time": TIMES, "doctor": DOCTORS, "insurer": INSURERS, "date": DATES}
    if key in simple:
        return _choice(simple[key], rng, m)
    if key in ("city", "city2"):
        return pl.Series(CITIES).gather(cities[key == "city2"][rows])
    if key == "order":
        return _choice(("A", "B", "W"), rng, m) + _num(rng, m, 0, 1_000_000, 6)
    if key == "amount":
        return _choice(CURRENCIES, rng, m) + _num(rng, m, 5, 900) + "." + _num(rng, m, 0, 100, 2)
    if key == "flight":
        return _choice(AIRLINES, rng, m) + " " + _num(rng, m, 100, 9999)
    if key == "name":
        return _choice(FIRST_NAMES, rng, m) + " " + _choice(LAST_NAMES, rng, m)
    return _pools().topics.pick(intent[rows], np.zeros(m))[0]


def _replace(text: pl.Series, rows: np.ndarray, key: str, values: pl.Series) -> pl.Series:
    if not len(rows):
        return text
    sub = pl.DataFrame({"t": text.gather(rows), "v": values})
    return text.scatter(rows, sub.select(pl.col("t").str.replace_all("{" + key + "}", pl.col("v"),
                                                                     literal=True))[:, 0])


def _fill(rng: np.random.Generator, user: pl.Series, user_slots: np.ndarray, response: pl.Series,
          response_slots: np.ndarray, wrong: np.ndarray, intent: np.ndarray) -> tuple[pl.Series, pl.Series]:
    """Fill the slots; user and response share values, except where the answer is wrong."""
    n = len(user)
    city = rng.integers(0, len(CITIES), n)
    cities = (city, (city + rng.integers(1, len(CITIES), n)) % len(CITIES))
    for key in SLOTS:
        rows_u = np.flatnonzero(user_slots & _BIT[key])
        rows_r = np.flatnonzero(response_slots & _BIT[key])
        rows = np.flatnonzero((user_slots | response_slots) & _BIT[key])
        if not len(rows):
            continue
        said = _slot_value(key, rng, rows, intent, cities)
        user = _replace(user, rows_u, key, said.gather(np.searchsorted(rows, rows_u)))
        answered = said.gather(np.searchsorted(rows, rows_r))
        if key in _WRONGABLE:
            off = np.flatnonzero(wrong[rows_r])
            answered = answered.scatter(off, _slot_value(key, rng, rows_r[off], intent, cities))
        response = _replace(response, rows_r, key, answered)
    return user, response


AGENT_ORDER: tuple[str, ...] = tuple(INTENTS)
INTENT_KEYS: tuple[tuple[str, Intent], ...] = tuple(
    (agent, intent) for agent in AGENT_ORDER for intent in INTENTS[agent])
_WINDOWS = 4  # a passing answer is 1..4 consecutive answer sentences
_BODY_BASE = {"tone": len(INTENT_KEYS) * _WINDOWS}
_BODY_BASE["policy"] = _BODY_BASE["tone"] + len(INTENT_KEYS)
_BODY_BASE["tool"] = _BODY_BASE["policy"] + len(INTENT_KEYS)
_BODY_BASE["cna"] = _BODY_BASE["tool"] + len(AGENT_ORDER)
_BODY_BASE["refusal"] = _BODY_BASE["cna"] + 1
_BODY_BASE["other"] = _BODY_BASE["refusal"] + 1
_TAILS = (TONE_SUFFIXES, ("Please try again later.", "You can also call us instead."))


def _after_comma(prefix: str, sentence: str) -> str:
    keep = not prefix.endswith(", ") or sentence.startswith(("I ", "I'"))
    return sentence if keep else sentence[0].lower() + sentence[1:]


def _windows(sentences: Sequence[str], length: int) -> list[str]:
    k = len(sentences)
    return [" ".join(sentences[(start + j) % k] for j in range(length)) for start in range(k)]


class _Pools:
    def __init__(self) -> None:
        body: list[list[str]] = [_windows(i.answers, w + 1) for _, i in INTENT_KEYS for w in range(_WINDOWS)]
        body += [[p + _after_comma(p, a) for p in TONE_PREFIXES for a in i.answers] for _, i in INTENT_KEYS]
        body += [[a + " " + v for a in i.answers for v in POLICY_VIOLATIONS[ag]] for ag, i in INTENT_KEYS]
        body += [list(TOOL_FAILED[a]) for a in AGENT_ORDER]
        body += [list(COULD_NOT_ANSWER), list(REFUSALS), list(OTHER)]
        self.body = Pool(body)
        self.asks = Pool([i.asks for _, i in INTENT_KEYS])
        self.topics = Pool([[i.topic] for _, i in INTENT_KEYS])
        self.disclaimers = Pool([DISCLAIMERS[a] + HEDGES for a in AGENT_ORDER])
        self.pii = Pool(PII_SENTENCES)
        self.tails = Pool(_TAILS)
        self.misc = {name: Pool([pool]) for name, pool in (
            ("openers", OPENERS), ("closings", CLOSINGS), ("greetings", GREETINGS),
            ("follow_ups", FOLLOW_UPS), ("rephrases", REPHRASES))}


_POOLS: _Pools | None = None


def _pools() -> _Pools:
    global _POOLS
    if _POOLS is None:
        _POOLS = _Pools()
    return _POOLS


def _join(pieces: Sequence[tuple[pl.Series, np.ndarray]]) -> tuple[pl.Series, np.ndarray]:
    text = pl.select(pl.concat_str([pl.lit(t) for t, _ in pieces], separator=" ", ignore_nulls=True))[:, 0]
    return text, np.bitwise_or.reduce([s for _, s in pieces])


def compose(rng: np.random.Generator, agent: np.ndarray, intent: np.ndarray,
            turn_index: np.ndarray, prev_rewrote: np.ndarray, category: np.ndarray,
            concise: np.ndarray, pii_rate: float = 0.07) -> pl.DataFrame:
    """User message and agent response per turn, plus the response's hidden shape flags.

    `agent` indexes AGENT_ORDER, `intent` indexes INTENT_KEYS, `category` is PASS or an
    index into CATEGORIES, `concise` marks turns served by a terse-style prompt.
    """
    pools, n = _pools(), len(agent)
    u = lambda: rng.random(n)  # noqa: E731 - a fresh uniform column per use
    passing = category == PASS

    # Response: opener, body (one gather from the flattened body pool), tail, disclaimer, closing.
    length = np.where(concise, 1, 1 + (u()[:, None] > np.array([.2, .55, .85])).sum(1))
    over_refusal = passing & (u() < np.where(concise, 0.06, 0.01))
    u_body = u()
    group = np.select(
        [over_refusal, passing | (category == WRONG), category == TONE, category == POLICY,
         category == TOOL, category == CNA],
        [_BODY_BASE["refusal"], intent * _WINDOWS + length - 1, _BODY_BASE["tone"] + intent,
         _BODY_BASE["policy"] + intent, _BODY_BASE["tool"] + agent, _BODY_BASE["cna"]],
        _BODY_BASE["other"])
    is_refusal = over_refusal | ((category == CNA) & ((u_body * len(COULD_NOT_ANSWER)) < len(REFUSALS)))
    answer_like = (passing | (category == WRONG) | (category == POLICY)) & ~over_refusal
    p_disclaimer = np.select([passing, category == CNA, category == WRONG, category == POLICY],
                             [0.05, 0.25, 0.12, 0.15], 0.08) + np.where(concise, 0.30, 0.0)
    has_disclaimer = u() < p_disclaimer
    response, response_slots = _join([
        pools.misc["openers"].pick(0, u(), answer_like & ~concise & (u() < 0.45)),
        pools.body.pick(group, u_body),
        pools.tails.pick(np.where(category == TONE, 0, 1), u(),
                         ((category == TONE) | (category == TOOL)) & (u() < 0.5)),
        pools.disclaimers.pick(agent, u(), has_disclaimer),
        pools.misc["closings"].pick(0, u(), (answer_like | (category == TOOL)) & ~concise & (u() < 0.4)),
    ])

    # User message: greeting, the ask (or a follow-up, or a rephrased ask), maybe a PII sentence.
    ask_again = (turn_index == 0) | prev_rewrote | (u() < 0.5)
    ask, ask_slots = pools.asks.pick(intent, u())
    follow, follow_slots = pools.misc["follow_ups"].pick(0, u())
    ask = pl.select(pl.when(pl.lit(pl.Series(prev_rewrote)))
                    .then(pl.lit(ask).str.slice(0, 1).str.to_lowercase() + pl.lit(ask).str.slice(1))
                    .when(pl.lit(pl.Series(ask_again))).then(pl.lit(ask))
                    .otherwise(pl.lit(follow)))[:, 0]
    ask_slots = np.where(ask_again, ask_slots, follow_slots)
    mix = np.array([PII_MIX[a] for a in AGENT_ORDER]).cumsum(1)
    pii_kind = (u()[:, None] >= mix[agent]).sum(1).clip(0, len(PII_KINDS) - 1)
    has_pii = u() < pii_rate
    user, user_slots = _join([
        pools.misc["greetings"].pick(0, u(), (turn_index == 0) & (u() < 0.4)),
        (pl.select(pl.concat_str([pl.lit(pools.misc["rephrases"].pick(0, u(), prev_rewrote)[0]), pl.lit(ask)],
                                 ignore_nulls=True))[:, 0], ask_slots),
        pools.pii.pick(pii_kind, u(), has_pii),
    ])

    user, response = _fill(rng, user, user_slots, response, response_slots, category == WRONG, intent)
    pii_rows = np.flatnonzero(has_pii)
    values = pii_values(rng, len(pii_rows))
    sub = user.gather(pii_rows)
    for key in PII_KINDS:
        sub = pl.DataFrame({"t": sub, "v": values[key]}).select(
            pl.col("t").str.replace_all("{" + key + "}", pl.col("v"), literal=True))[:, 0]
    return pl.DataFrame({
        "user_message": user.scatter(pii_rows, sub),
        "agent_response": response,
        "is_refusal": is_refusal,
        "has_disclaimer": has_disclaimer,
    })
