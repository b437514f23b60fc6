"""The demo's data set: subscribers, templates and events, deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import unicodedata
from collections.abc import Iterator
from typing import Any

from .._core import Store

UTC = dt.timezone.utc

DEMO_NOW = dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
SIGNUPS_FROM = dt.datetime(2018, 1, 1, tzinfo=UTC)
SIGNUPS_UNTIL = dt.datetime(2026, 6, 30, tzinfo=UTC)
CLICK_SHARE = 0.22  # clicks per open+click event: a click-to-open rate of ~28%
EVENT_CHUNK = 8192

# Names by language; countries (weighted like a European/US retailer's list) pick a pool.
NAMES: dict[str, tuple[str, str]] = {
    "en": (
        "James Mary John Patricia Robert Jennifer Michael Linda David Emily Sarah Daniel Olivia "
        "Liam Emma Noah Ava Ethan Sophia Mason Grace Chloe Jack Megan William Elizabeth Joseph "
        "Susan Thomas Jessica Charles Karen Christopher Nancy Matthew Lisa Anthony Betty Mark "
        "Margaret Andrew Ashley Joshua Kimberly Kevin Amanda Brian Rebecca George Laura Ryan "
        "Hannah Oliver Amelia Harry Isla Samuel Lucy Benjamin Ruby",
        "Smith Johnson Williams Brown Jones Miller Davis Wilson Taylor Anderson Thomas Moore "
        "Martin Jackson White Harris Clark Lewis Walker Hall O'Brien Murphy Evans Wright Young "
        "King Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Turner "
        "Parker Collins Edwards Stewart Morris Rogers Reed Cook Morgan Bell Cooper Richardson Cox "
        "Howard Ward Wood Hughes Price Bennett Gray Kelly Foster",
    ),
    "de": (
        "Lukas Anna Leon Lea Finn Hannah Jonas Mia Paul Emma Felix Lena Maximilian Sophie "
        "Jürgen Sabine Tobias Katharina Niklas Julia Stefan Claudia Matthias Laura Florian "
        "Johanna Andreas Marie",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
        "Richter Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange "
        "Schmitt Werner Krause Meier Lehmann Köhler",
    ),
    "fr": (
        "Louis Camille Hugo Léa Gabriel Chloé Arthur Manon Jules Inès Lucas Zoé Théo Élodie "
        "Nicolas Juliette Antoine Margaux Mathieu Clémence Julien Pauline Maxime Sarah",
        "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
        "Lefèvre Girard Michel Garcia David Bertrand Roux Vincent Fournier Morel Mercier "
        "Blanc Guérin Faure",
    ),
    "es": (
        "Hugo Lucía Martín Sofía Pablo María Alejandro Paula Daniel Carmen Javier Elena José "
        "Marta Diego Valeria Sergio Andrea Carlos Laura Adrián Claudia Manuel Isabel Raúl Ana",
        "García Rodríguez González Fernández López Martínez Sánchez Pérez Gómez Jiménez Ruiz "
        "Hernández Díaz Moreno Muñoz Álvarez Romero Alonso Gutiérrez Navarro Torres Domínguez "
        "Vázquez Ramos Gil Ramírez",
    ),
    "it": (
        "Leonardo Giulia Francesco Sofia Alessandro Aurora Lorenzo Alice Matteo Ginevra Andrea "
        "Chiara Marco Francesca Giuseppe Elena Davide Martina Simone Sara Luca Valentina "
        "Federico Beatrice",
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo "
        "Conti Fontana Costa Giordano Mancini Rizzo Lombardi Moretti Barbieri Caruso Ferri "
        "Galli Leone Longo",
    ),
    "pt": (
        "Miguel Helena Arthur Alice Heitor Laura Bernardo Valentina Davi Júlia Gabriel Beatriz "
        "João Ana Pedro Mariana Lucas Camila Rafael Larissa Thiago Fernanda Felipe Letícia",
        "Silva Santos Oliveira Souza Rodrigues Ferreira Alves Pereira Lima Gomes Costa Ribeiro "
        "Martins Carvalho Almeida Lopes Soares Fernandes Vieira Barbosa Rocha Dias Nascimento "
        "Araújo Moreira Cardoso",
    ),
    "nl": (
        "Daan Emma Sem Julia Lucas Mila Levi Tess Finn Sophie Bram Anna Noah Zoë Jesse Sanne "
        "Thijs Fleur Ruben Lotte Lars Iris",
        "Jansen Visser Smit Meijer Bakker Mulder Bos Vos Peters Hendriks Dekker Brouwer "
        "Janssen Vermeulen Willems Koster Prins Huisman Kok Postma Kuipers Veenstra",
    ),
    "ja": (
        "Haruto Yui Sota Himari Yuto Aoi Riku Sakura Ren Hina Kaito Mei Hiroshi Yuki Takumi "
        "Rin Kenji Akari Daiki Miyu",
        "Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Yoshida "
        "Yamada Sasaki Matsumoto Inoue Kimura Hayashi Shimizu Yamazaki Mori",
    ),
    "hi": (
        "Aarav Saanvi Vihaan Ananya Arjun Diya Reyansh Aadhya Krishna Isha Rohan Priya Aditya "
        "Kavya Rahul Neha Vikram Pooja Sanjay Anjali",
        "Sharma Verma Patel Gupta Singh Kumar Reddy Nair Iyer Mehta Joshi Rao Das Kapoor "
        "Chopra Malhotra Bhat Pillai Agarwal Banerjee",
    ),
}
COUNTRIES: tuple[tuple[str, str, int], ...] = (
    ("US", "en", 30), ("GB", "en", 10), ("CA", "en", 5), ("AU", "en", 3), ("IE", "en", 1),
    ("DE", "de", 10), ("AT", "de", 1), ("CH", "de", 1), ("FR", "fr", 8), ("BE", "fr", 1),
    ("ES", "es", 5), ("MX", "es", 3), ("IT", "it", 5), ("BR", "pt", 6), ("PT", "pt", 1),
    ("NL", "nl", 3), ("JP", "ja", 3), ("IN", "hi", 4),
)  # fmt: skip
# Reserved names only (RFC 2606): a generated address can never be somebody's real one.
DOMAINS: tuple[tuple[str, int], ...] = (
    ("example.com", 30), ("example.net", 15), ("example.org", 10), ("mail.example.com", 10),
    ("inbox.example.net", 8), ("post.example.org", 5), ("contoso.example", 2),
    ("fabrikam.example", 2),
)  # fmt: skip
TAGS = (
    "vip", "loyalty", "black-friday-2025", "abandoned-cart", "webinar", "mobile-app", "trial",
    "referral", "b2b", "outdoor", "running", "kids",
)  # fmt: skip
TEMPLATES: dict[str, tuple[str, str, str]] = {  # key: (subject, heading, call to action)
    "welcome": ("Welcome to Lumen, {{first_name}}!", "Good to have you", "Start exploring"),
    "weekly-digest": ("Your weekly picks from Lumen", "Picked for you", "See this week's picks"),
    "spring-sale": ("Spring sale: 30% off everything until Sunday", "30% off", "Shop the sale"),
    "cart-reminder": ("You left something in your cart", "Still thinking?", "Back to my cart"),
    "win-back": ("We miss you, {{first_name}}: here is 15% off", "Come back", "Use my 15%"),
    "consent-confirmation": (
        "Please confirm your email preferences",
        "Your preferences",
        "Confirm my choices",
    ),
}
LANDING_PAGES = (
    "new-arrivals", "sale", "jackets", "boots", "backpacks", "blog/trail-guide", "stores",
    "account/preferences",
)  # fmt: skip


class MarketingData:
    """Generates the demo's rows; the same seed always gives the same rows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pick = self._random("pick")
        self.emails: list[str] = []
        self.engagement: list[float] = []  # cumulative weights: a few subscribers open a lot
        self.campaigns = self._campaigns()

    def _random(self, purpose: str) -> random.Random:
        return random.Random(f"replikv-demo/{self.seed}/{purpose}")

    def subscribers(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        rng = self._random("subscribers")
        countries = rng.choices(COUNTRIES, weights=[c[2] for c in COUNTRIES], k=count)
        domains = rng.choices([d[0] for d in DOMAINS], weights=[d[1] for d in DOMAINS], k=count)
        pools = {lang: (first.split(), last.split()) for lang, (first, last) in NAMES.items()}
        signup_span = (SIGNUPS_UNTIL - SIGNUPS_FROM).total_seconds()
        taken: set[str] = set()
        rows = []
        for (country, lang, _), domain in zip(countries, domains, strict=True):
            firsts, lasts = pools[lang]
            first, last = rng.choice(firsts), rng.choice(lasts)
            email = _unique(rng, _email(rng, first, last, domain), taken)
            signup_seconds = int(signup_span * rng.random() ** 0.6)  # the list keeps growing
            rows.append(
                (
                    email,
                    {
                        "name": f"{first} {last}",
                        "email": email,
                        "country": country,
                        "signup": SIGNUPS_FROM + dt.timedelta(seconds=signup_seconds),
                        "consent": {
                            "newsletter": rng.random() < 0.85,
                            "promotions": rng.random() < 0.55,
                        },
                        "tags": rng.sample(TAGS, rng.choice((0, 0, 1, 1, 1, 2, 3))),
                    },
                )
            )
        self.emails = [email for email, _ in rows]
        weights = (rng.paretovariate(1.2) for _ in rows)
        self.engagement = list(itertools.accumulate(weights))
        return rows

    def templates(self) -> list[tuple[str, dict[str, Any]]]:
        rng = self._random("templates")
        rows = []
        for key, (subject, heading, action) in TEMPLATES.items():
            page = rng.choice(LANDING_PAGES)
            html = (
                f'<html><body style="font-family:sans-serif"><h1>{heading}</h1>'
                "<p>Hi {{first_name}},</p><p>{{body}}</p>"
                f'<p><a href="https://shop.lumen.example/{page}?utm_campaign={{{{campaign}}}}">'
                f"{action}</a></p>"
                '<p style="font-size:11px"><a href="{{unsubscribe_url}}">Unsubscribe</a></p>'
                "</body></html>"
            )
            edited = SIGNUPS_UNTIL - dt.timedelta(
                days=rng.randrange(30, 400), minutes=rng.randrange(1440)
            )
            rows.append((key, {"subject": subject, "html": html, "updated_at": edited}))
        return rows

    def _campaigns(self) -> list[tuple[str, dt.datetime, list[str]]]:
        """(campaign id, sent at, links) for the first half of 2026."""
        rng = self._random("campaigns")
        first_monday = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        sends = [
            (f"2026-w{week + 1:02d}-weekly-digest", first_monday + dt.timedelta(weeks=week))
            for week in range(26)
        ]
        sends += [
            ("2026-02-win-back", dt.datetime(2026, 2, 15, 17, 0, tzinfo=UTC)),
            ("2026-03-spring-sale-launch", dt.datetime(2026, 3, 20, 7, 30, tzinfo=UTC)),
            ("2026-03-spring-sale-reminder", dt.datetime(2026, 3, 27, 7, 30, tzinfo=UTC)),
            ("2026-04-spring-sale-last-call", dt.datetime(2026, 4, 3, 7, 30, tzinfo=UTC)),
            ("2026-05-win-back", dt.datetime(2026, 5, 15, 17, 0, tzinfo=UTC)),
            ("2026-06-consent-confirmation", dt.datetime(2026, 6, 1, 8, 0, tzinfo=UTC)),
        ]
        campaigns = []
        for campaign, sent_at in sends:
            pages = rng.sample(LANDING_PAGES, 3)
            links = [
                f"https://shop.lumen.example/{page}?utm_source=email&utm_campaign={campaign}"
                for page in pages
            ]
            campaigns.append((campaign, sent_at, links))
        return campaigns

    def events(self, *, first_id: int, random_source: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Open and click events with ids from ``first_id`` on, without end."""
        if not self.emails:
            raise RuntimeError("generate the subscribers before their events")
        rng = self._random(random_source)
        event_id = first_id
        while True:
            who = rng.choices(self.emails, cum_weights=self.engagement, k=EVENT_CHUNK)
            which = rng.choices(self.campaigns, k=EVENT_CHUNK)
            for email, (campaign, sent_at, links) in zip(who, which, strict=True):
                # Opens trickle in over hours after a send; a click follows its open.
                at = sent_at + dt.timedelta(seconds=int(rng.expovariate(1 / 5400)))
                event: dict[str, Any]
                if rng.random() < CLICK_SHARE:
                    event = {
                        "type": "click",
                        "subscriber": email,
                        "campaign": campaign,
                        "at": at,
                        "url": rng.choice(links),
                    }
                else:
                    event = {"type": "open", "subscriber": email, "campaign": campaign, "at": at}
                yield event_id, event
                event_id += 1

    def featured_subscriber(self, store: Store) -> str:
        """A subscriber with some consent to revoke (any subscriber if nobody has one)."""
        start = self.pick.randrange(len(self.emails))
        for email in itertools.chain(self.emails[start:], self.emails[:start]):
            consent = store.get("subscribers", email)["consent"]
            if consent["newsletter"] or consent["promotions"]:
                return email
        return self.emails[start]


def _email(rng: random.Random, first: str, last: str, domain: str) -> str:
    f, l = ascii_name(first), ascii_name(last)  # noqa: E741
    style = rng.random()
    if style < 0.35:
        local = f"{f}.{l}"
    elif style < 0.50:
        local = f"{f[0]}{l}"
    elif style < 0.60:
        local = f"{f}{l[0]}{rng.randrange(60, 100)}"
    elif style < 0.70:
        local = f"{f}_{l}"
    elif style < 0.78:
        local = f"{l}.{f}"
    elif style < 0.90:
        local = f"{f}{rng.randrange(1, 1000)}"
    else:
        local = f"{f}.{l}{rng.randrange(1, 100)}"
    return f"{local}@{domain}"


def _unique(rng: random.Random, email: str, taken: set[str]) -> str:
    """``email``, or ``email`` with a number after its local part if it is taken."""
    local, domain = email.split("@")
    candidate, digits = email, 2
    while candidate in taken:  # like people do: add a number, a longer one if need be
        candidate = f"{local}{rng.randrange(10 ** (digits - 1), 10**digits)}@{domain}"
        digits = min(digits + 1, 6)
    taken.add(candidate)
    return candidate


def ascii_name(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())
