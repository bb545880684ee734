"""Generate the new text of the domain-adaptation experiment: a naturalist's survey logbook.

Domain adaptation needs English of another kind than Shakespeare's plays, and scratchmlm may only
ship text it wrote. So this script writes one: dated log entries of a coastal survey ship
(weather, bearings, soundings in fathoms, birds, shells and plants, the crew), built from
sentence templates and word lists written for this project and drawn with ``random.Random(seed)``,
so that the same arguments give the same text, byte for byte.

Its characters are ASCII letters, space, newline, ``! ' , - . : ; ?`` and the digits: Tiny
Shakespeare's alphabet lacks every digit but 3, which the experiment reports as missing.

    python experiments/make_domain_text.py logbook.txt [--chars 300000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
from pathlib import Path

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WINDS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]
STRENGTHS = ["light", "moderate", "fresh", "strong", "gusting", "fitful", "steady", "falling"]
SKIES = ["clear", "overcast", "hazy", "squally", "fair", "thick with fog", "grey and low", "bright"]
PLACES = ["the point", "the northern reef", "the long beach", "the river mouth", "the headland", "the sandbar",
          "the inner harbour", "the tidal flats", "the cliffs", "the salt marsh", "the lagoon", "the outer islets"]
BIRDS = ["gannets", "petrels", "terns", "cormorants", "oystercatchers", "curlews", "gulls", "shearwaters",
         "plovers", "herons", "sandpipers", "albatrosses"]
SHELLS = ["cowries", "limpets", "whelks", "cockles", "periwinkles", "scallops", "mussels", "razor shells"]
PLANTS = ["samphire", "sea kale", "thrift", "kelp", "eelgrass", "saltwort", "sea lavender", "bladderwrack"]
ADJECTIVES = ["small", "large", "pale", "speckled", "dark", "curious", "delicate", "weathered", "common",
              "rare", "restless", "silent", "handsome", "ragged"]
CREW = ["the captain", "the mate", "the surgeon", "the carpenter", "the cook", "the boatswain", "young Hale",
        "the second lieutenant", "old Marsh", "the sailmaker"]
DOINGS = ["mended the boat", "sounded the channel", "took bearings from the masthead", "dried the specimens",
          "repaired the pump", "salted the fish", "wrote up the charts", "cleaned the muskets",
          "spread the sails to dry", "caught a great many fish"]
FEELINGS = ["weary", "cheerful", "anxious", "hopeful", "idle", "content", "uneasy", "thoughtful"]

TEMPLATES = [
    "Wind {wind}, {strength}; sky {sky}.",
    "At dawn the wind came {strength} from the {wind}, and by noon the sky was {sky}.",
    "Sounded {depth} fathoms off {place}, with a bottom of {bottom}.",
    "Took soundings across {place}: {depth}, {depth2} and {depth3} fathoms.",
    "Bearing of {place} from the ship, {bearing} degrees; distance about {miles} miles.",
    "Noon latitude {lat} degrees {minutes} minutes south.",
    "Saw many {birds} over {place}, feeding on small fish.",
    "A flock of {number} {birds} passed to the {wind} before sunset.",
    "Collected {number} {adjective} {shells} on {place}.",
    "Among the {shells} I found one {adjective} specimen, which I have kept in spirits.",
    "The {plant} grows thickly along {place}; I pressed several sprigs.",
    "Found {plant} in flower near {place}, which surprised me so late in the season.",
    "{crew_cap} {doing}.",
    "While {crew} {doing}, I walked along {place} with my notebook.",
    "{crew_cap} is {feeling} today; the men say the weather will turn.",
    "Is it possible that the {birds} follow the shoals of fish along {place}?",
    "I wonder whether the {adjective} {shells} of {place} are a separate kind.",
    "No {birds} seen all day: the sea {sky}, the air heavy.",
    "The boat returned at {hour} o'clock with {number} {birds} and a basket of {shells}.",
    "Rain from {hour} until {hour2}; nothing could be done on deck.",
    "The glass fell a little in the night; wind backing to the {wind}.",
    "Anchored in {depth} fathoms, {place} bearing {bearing} degrees.",
    "Weighed anchor at {hour} and stood off to the {wind} under easy sail.",
    "The current set us {miles} miles to the {wind} during the night.",
    "Water temperature {temp} degrees; air {temp2} degrees.",
    "{crew_cap} and I rowed to {place} to look for {birds}' nests.",
    "On the rocks below {place} the {adjective} {birds} were nesting in great numbers.",
    "Dissected one of the {birds}; its stomach held small {shells} and weed.",
    "The {plant} on {place} is {adjective} and much eaten by insects.",
    "Spent the afternoon drawing the {shells}; my hand is not steady enough for fine work.",
    "Heavy swell from the {wind}; several of the men were sick.",
    "It is {feeling} work, sounding the same channel day after day.",
    "Why do the {birds} avoid {place} when the wind is {wind}?",
    "A seal came up beside the boat near {place} and watched us for some minutes.",
    "{crew_cap} shot {number} {birds} for the table; I kept the skins of two.",
    "Low water at {hour}; the flats below {place} lay bare for a mile.",
    "High water at {hour} and {hour2}; a strong tide in the narrows.",
    "The {adjective} light at evening made {place} look like a painted scene.",
    "Counted {number} kinds of {shells} on a single rock: a rich shore.",
    "Caught a {adjective} crab among the {plant}; it pinched {crew} sharply.",
    "The men are {feeling}: letters are long overdue.",
    "Entered in the chart the soundings of {place}; {number} new marks.",
    "Fog all morning; we lay at anchor and heard the {birds} without seeing them.",
    "By my reckoning we have sounded {number} miles of this coast since the {day} of {month}.",
]
BOTTOMS = ["fine sand", "shells and gravel", "soft mud", "rock", "coarse sand", "weed and stones"]


def _fill(template: str, rng: random.Random) -> str:
    crew = rng.choice(CREW)
    values = {
        "wind": rng.choice(WINDS), "strength": rng.choice(STRENGTHS), "sky": rng.choice(SKIES),
        "place": rng.choice(PLACES), "birds": rng.choice(BIRDS), "shells": rng.choice(SHELLS),
        "plant": rng.choice(PLANTS), "adjective": rng.choice(ADJECTIVES), "crew": crew,
        "crew_cap": crew[0].upper() + crew[1:], "doing": rng.choice(DOINGS), "feeling": rng.choice(FEELINGS),
        "bottom": rng.choice(BOTTOMS), "depth": rng.randint(3, 60), "depth2": rng.randint(3, 60),
        "depth3": rng.randint(3, 60), "bearing": rng.randint(0, 359), "miles": rng.randint(1, 25),
        "lat": rng.randint(30, 54), "minutes": rng.randint(0, 59), "number": rng.randint(2, 90),
        "hour": rng.randint(1, 12), "hour2": rng.randint(1, 12), "temp": rng.randint(40, 68),
        "temp2": rng.randint(40, 75), "day": rng.randint(1, 28), "month": rng.choice(MONTHS),
    }
    return template.format(**values)


def generate(num_chars: int = 300_000, seed: int = 0) -> str:
    """At least ``num_chars`` characters of logbook (whole entries), the same for the same seed."""
    rng = random.Random(seed)
    entries, length, day = [], 0, 0
    while length < num_chars:
        day += rng.randint(1, 3)
        date = f"{day % 28 + 1} {MONTHS[(day // 28) % 12]}."
        sentences = [_fill(rng.choice(TEMPLATES), rng) for _ in range(rng.randint(3, 8))]
        entry = date + " " + " ".join(sentences) + "\n\n"
        entries.append(entry)
        length += len(entry)
    return "".join(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    text = generate(args.chars, args.seed)
    temporary = args.out.with_name(args.out.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, args.out)
    print(f"{args.out}: {len(text):,} characters, {len(set(text))} distinct, "
          f"sha256 {hashlib.sha256(text.encode()).hexdigest()}")


if __name__ == "__main__":
    main()
