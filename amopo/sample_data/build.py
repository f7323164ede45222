"""Generate the shipped sample preference data set (``train.jsonl`` / ``test.jsonl``).

Everything here is written by this project: a list of small hand-written facts across everyday
domains, a few instruction templates with explicit format constraints, and five systematic ways a
response can be worse (the *flaw types*). For each (fact, template) prompt the generator writes a
chosen response that is correct and obeys the format, and a rejected response with one flaw, and
scores both on the HelpSteer2 scales (helpfulness, correctness, coherence, complexity, verbosity:
0-4) plus instruction_following (1-5), consistently with what the text actually does.

Each topic also yields two *steerable* pairs, whose responses are both correct and differ on one
dimension only: a concise vs a detailed answer (verbosity) and a plain vs a technical answer
(complexity, from the hand-written ``TECHNICAL`` sentences). They let training see a style level
both ways (``amopo prepare --steer-both-orientations``) and held-out steering be measured.

Pure standard library; every random choice comes from ``random.Random(seed)``.

    python -m amopo.sample_data.build          # rewrite train.jsonl and test.jsonl
    python -m amopo.sample_data.build --check  # exit 1 if the files are stale
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SCORE_KEYS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity",
              "instruction_following")
FLAWS = ("wrong_fact", "ignores_format", "evasive", "rambling", "incomplete")
TEMPLATES = ("short", "one_sentence", "under_20", "two_sentences", "bullets", "yes_no")
STEER_DIMENSIONS = ("verbosity", "complexity")  # one steerable pair per topic on each
OPEN_TEMPLATE = "open"        # the steerable pairs' prompt: the bare question, no format instruction
EXTRA_POINT_MAX_OVERLAP = 0.35  # a bullet point repeating more of the answer is no third sentence
TEST_PAIRS_TARGET = 60       # held-out flawed pairs (topics are moved to test until this is reached)
IMPERFECT_CHOSEN_RATE = 0.15  # share of pairs whose chosen response is correct but padded
MAX_PROMPT_WORDS = 40
MAX_RESPONSE_WORDS = 60


# --------------------------------------------------------------------------------------------
# Hand-written facts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fact:
    """One topic. ``answer`` occurs verbatim in ``sentence``; swapping it for ``wrong`` gives the
    wrong-fact variant. ``yes_no`` is a yes/no question with ``{x}`` for the candidate answer."""

    topic: str
    domain: str
    kind: str                     # "num" | "year" | "word" (has a short answer) | "phrase"
    questions: tuple[str, ...]
    answer: str
    wrong: str
    sentence: str                 # one sentence, under 20 words, contains ``answer``
    explanation: str              # one more sentence
    points: tuple[str, ...] | None  # three one-sentence bullet points
    yes_no: str | None


def _f(topic, domain, kind, questions, answer, wrong, sentence, explanation, points, yes_no):
    return Fact(topic, domain, kind, tuple(questions), answer, wrong, sentence, explanation,
                tuple(points) if points else None, yes_no)


FACTS: tuple[Fact, ...] = (
    # ---- geography
    _f("capital_france", "geography", "word",
       ["What is the capital of France?", "Which city is the capital of France?"],
       "Paris", "Lyon", "The capital of France is Paris.",
       "It is also the largest city in the country.",
       ["Paris is the capital of France.", "It lies on the river Seine.",
        "It is the largest city in the country."],
       "Is {x} the capital of France?"),
    _f("capital_japan", "geography", "word",
       ["What is the capital of Japan?", "Which city serves as Japan's capital?"],
       "Tokyo", "Osaka", "Tokyo is the capital of Japan.",
       "Its wider metro area is home to more than 30 million people.",
       ["Tokyo is the capital of Japan.", "It is on the island of Honshu.",
        "Its metro area has more than 30 million people."],
       "Is {x} the capital of Japan?"),
    _f("capital_australia", "geography", "word",
       ["What is the capital of Australia?", "Which city is Australia's capital?"],
       "Canberra", "Sydney", "The capital of Australia is Canberra.",
       "It was planned and built as the capital in the early 1900s.",
       ["Canberra is the capital of Australia.", "It is a planned city.",
        "It is home to Parliament House."],
       "Is {x} the capital of Australia?"),
    _f("capital_canada", "geography", "word",
       ["What is the capital of Canada?", "Which city is the capital of Canada?"],
       "Ottawa", "Toronto", "Ottawa is the capital of Canada.",
       "It is in the province of Ontario.",
       ["Ottawa is the capital of Canada.", "It is in the province of Ontario.",
        "Parliament Hill is located there."],
       "Is {x} the capital of Canada?"),
    _f("capital_brazil", "geography", "word",
       ["What is the capital of Brazil?", "Which city is the capital of Brazil?"],
       "Brasília", "Rio de Janeiro", "The capital of Brazil is Brasília.",
       "It was built in the late 1950s and became the capital in 1960.",
       ["Brasília is the capital of Brazil.", "It is a planned city.",
        "It became the capital in 1960."],
       "Is {x} the capital of Brazil?"),
    _f("largest_ocean", "geography", "word",
       ["What is the largest ocean on Earth?", "Which ocean is the biggest in the world?"],
       "Pacific", "Atlantic", "The largest ocean on Earth is the Pacific Ocean.",
       "It covers roughly a third of the planet's surface.",
       ["The Pacific is the largest ocean.", "It lies between Asia and the Americas.",
        "It is also the deepest ocean."],
       "Is the {x} the largest ocean on Earth?"),
    _f("tallest_mountain", "geography", "word",
       ["What is the tallest mountain above sea level?",
        "Which mountain is the highest above sea level?"],
       "Mount Everest", "Mont Blanc", "Mount Everest is the tallest mountain above sea level.",
       "It stands about 8,849 metres high on the border of Nepal and China.",
       ["Mount Everest is the highest mountain above sea level.",
        "It stands about 8,849 metres tall.", "It sits on the border of Nepal and China."],
       "Is {x} the tallest mountain above sea level?"),
    _f("continents", "geography", "num",
       ["How many continents are there?", "How many continents does the usual school model count?"],
       "7", "5", "There are 7 continents in the most common model.",
       "They are Africa, Antarctica, Asia, Australia, Europe, North America and South America.",
       ["The common model counts 7 continents.", "Asia is the largest of them.",
        "Antarctica is the coldest."],
       "Are there {x} continents in the most common model?"),
    _f("largest_hot_desert", "geography", "word",
       ["What is the largest hot desert in the world?", "Which hot desert is the biggest?"],
       "Sahara", "Gobi", "The Sahara is the largest hot desert in the world.",
       "It stretches across much of North Africa.",
       ["The Sahara is the largest hot desert.", "It covers much of North Africa.",
        "Antarctica is larger overall but is a cold desert."],
       "Is the {x} the largest hot desert in the world?"),
    _f("largest_country", "geography", "word",
       ["What is the largest country by area?", "Which country covers the most land?"],
       "Russia", "Canada", "Russia is the largest country by area.",
       "It spans eleven time zones across Europe and Asia.",
       ["Russia is the largest country by land area.", "It spans Europe and Asia.",
        "It has eleven time zones."],
       "Is {x} the largest country by area?"),
    _f("equator", "geography", "word",
       ["Which imaginary line divides Earth into northern and southern halves?",
        "What line splits the globe into the Northern and Southern Hemispheres?"],
       "equator", "prime meridian",
       "The equator divides Earth into the Northern and Southern Hemispheres.",
       "It lies at 0 degrees latitude.",
       ["The equator splits Earth into north and south.", "It lies at 0 degrees latitude.",
        "Places on it have about 12 hours of daylight all year."],
       "Does the {x} divide Earth into northern and southern halves?"),

    # ---- science
    _f("water_boils", "science", "num",
       ["At what temperature in Celsius does water boil at sea level?",
        "What is the boiling point of water in degrees Celsius at sea level?"],
       "100", "90", "Water boils at 100 degrees Celsius at sea level.",
       "At higher altitudes it boils at a lower temperature.",
       ["Water boils at 100 degrees Celsius at sea level.", "That equals 212 degrees Fahrenheit.",
        "It boils at lower temperatures high up in the mountains."],
       "Does water boil at {x} degrees Celsius at sea level?"),
    _f("water_formula", "science", "word",
       ["What is the chemical formula of water?", "Which chemical formula describes water?"],
       "H2O", "CO2", "The chemical formula of water is H2O.",
       "Each molecule has two hydrogen atoms and one oxygen atom.",
       ["Water's formula is H2O.", "Each molecule has two hydrogen atoms.",
        "Each molecule has one oxygen atom."],
       "Is {x} the chemical formula of water?"),
    _f("planet_count", "science", "num",
       ["How many planets are in our solar system?", "How many planets orbit our Sun?"],
       "8", "9", "There are 8 planets in our solar system.",
       "Pluto was reclassified as a dwarf planet in 2006.",
       ["Our solar system has 8 planets.", "Jupiter is the largest of them.",
        "Pluto is now called a dwarf planet."],
       "Are there {x} planets in our solar system?"),
    _f("largest_planet", "science", "word",
       ["What is the largest planet in our solar system?", "Which planet is the biggest?"],
       "Jupiter", "Saturn", "Jupiter is the largest planet in our solar system.",
       "It is a gas giant more than eleven times wider than Earth.",
       ["Jupiter is the largest planet.", "It is a gas giant.",
        "It has a huge storm called the Great Red Spot."],
       "Is {x} the largest planet in our solar system?"),
    _f("red_planet", "science", "word",
       ["Which planet is known as the Red Planet?", "What planet do people call the Red Planet?"],
       "Mars", "Venus", "Mars is known as the Red Planet.",
       "Iron oxide dust on its surface gives it a reddish colour.",
       ["Mars is called the Red Planet.", "Its colour comes from iron oxide dust.",
        "It is the fourth planet from the Sun."],
       "Is {x} known as the Red Planet?"),
    _f("photosynthesis_gas", "science", "word",
       ["What gas do plants release during photosynthesis?",
        "Which gas is given off by plants when they photosynthesise?"],
       "oxygen", "nitrogen", "Plants release oxygen during photosynthesis.",
       "They take in carbon dioxide and use sunlight to make sugar.",
       ["Photosynthesis releases oxygen.", "Plants take in carbon dioxide.",
        "Sunlight powers the whole process."],
       "Do plants release {x} during photosynthesis?"),
    _f("speed_of_light", "science", "num",
       ["Roughly how fast does light travel, in kilometres per second?",
        "About how many kilometres per second does light travel?"],
       "300,000", "30,000", "Light travels at about 300,000 kilometres per second.",
       "At that speed, sunlight reaches Earth in about eight minutes.",
       ["Light travels at about 300,000 kilometres per second.",
        "Nothing with mass can go that fast.", "Sunlight takes about eight minutes to reach us."],
       "Does light travel at about {x} kilometres per second?"),
    _f("adult_bones", "science", "num",
       ["How many bones does an adult human have?", "How many bones are in the adult human skeleton?"],
       "206", "306", "An adult human skeleton has 206 bones.",
       "Babies are born with more, but some fuse together as they grow.",
       ["Adults have 206 bones.", "Babies start with around 300.",
        "The thigh bone is the longest one."],
       "Does an adult human have {x} bones?"),
    _f("heart_chambers", "science", "num",
       ["How many chambers does the human heart have?", "How many chambers are in a human heart?"],
       "4", "2", "The human heart has 4 chambers.",
       "There are two atria on top and two ventricles below.",
       ["The heart has 4 chambers.", "The two upper ones are the atria.",
        "The two lower ones are the ventricles."],
       "Does the human heart have {x} chambers?"),
    _f("gravity_law", "science", "word",
       ["Who formulated the law of universal gravitation?",
        "Which scientist first described universal gravitation?"],
       "Isaac Newton", "Albert Einstein",
       "Isaac Newton formulated the law of universal gravitation.",
       "He published it in 1687 in his book Principia.",
       ["Isaac Newton described universal gravitation.", "He published it in 1687.",
        "It explains why planets orbit the Sun."],
       "Did {x} formulate the law of universal gravitation?"),
    _f("water_freezes_f", "science", "num",
       ["At what temperature in Fahrenheit does water freeze?",
        "What is the freezing point of water in degrees Fahrenheit?"],
       "32", "42", "Water freezes at 32 degrees Fahrenheit.",
       "That is the same as 0 degrees Celsius.",
       ["Water freezes at 32 degrees Fahrenheit.", "That equals 0 degrees Celsius.",
        "Adding salt lowers the freezing point."],
       "Does water freeze at {x} degrees Fahrenheit?"),
    _f("dna_name", "science", "word",
       ["What does DNA stand for?", "What is the full name of DNA?"],
       "deoxyribonucleic acid", "dinitrogen acid", "DNA stands for deoxyribonucleic acid.",
       "It carries the genetic instructions of living things.",
       ["DNA stands for deoxyribonucleic acid.", "It carries genetic instructions.",
        "Its shape is a double helix."],
       "Does DNA stand for {x}?"),
    _f("closest_star", "science", "word",
       ["What is the closest star to Earth?", "Which star is nearest to our planet?"],
       "the Sun", "Sirius", "The closest star to Earth is the Sun.",
       "Its light takes about eight minutes to reach us.",
       ["Earth's closest star is the Sun.", "It is about 150 million kilometres away.",
        "The next closest star is Proxima Centauri."],
       "Is {x} the closest star to Earth?"),
    _f("liquid_metal", "science", "word",
       ["Which metal is liquid at room temperature?", "What metal stays liquid at room temperature?"],
       "mercury", "iron", "The metal mercury is liquid at room temperature.",
       "It was once widely used in thermometers.",
       ["The metal mercury is liquid at room temperature.", "It was used in old thermometers.",
        "Its vapour is toxic to breathe."],
       "Is {x} a metal that is liquid at room temperature?"),

    # ---- arithmetic and units
    _f("leap_year", "arithmetic", "num",
       ["How many days are in a leap year?", "How many days does a leap year have?"],
       "366", "365", "A leap year has 366 days.", "The extra day is February 29.",
       ["A leap year has 366 days.", "The extra day is February 29.",
        "Leap years usually come every four years."],
       "Does a leap year have {x} days?"),
    _f("seconds_hour", "units", "num",
       ["How many seconds are in an hour?", "How many seconds does one hour contain?"],
       "3,600", "360", "There are 3,600 seconds in an hour.",
       "That is 60 minutes times 60 seconds.",
       ["An hour has 3,600 seconds.", "An hour has 60 minutes.", "Each minute has 60 seconds."],
       "Are there {x} seconds in an hour?"),
    _f("mile_km", "units", "num",
       ["About how many kilometres are in one mile?", "Roughly how many kilometres make a mile?"],
       "1.6", "2.5", "One mile is about 1.6 kilometres.",
       "More precisely, it is 1.609 kilometres.",
       ["One mile is about 1.6 kilometres.", "One kilometre is about 0.62 miles.",
        "A 5 km race is a little over 3 miles."],
       "Is one mile about {x} kilometres?"),
    _f("inch_cm", "units", "num",
       ["How many centimetres are in one inch?", "How many centimetres equal an inch?"],
       "2.54", "3.5", "One inch is exactly 2.54 centimetres.",
       "So 10 inches is 25.4 centimetres.",
       ["One inch is exactly 2.54 centimetres.", "Ten inches is 25.4 centimetres.",
        "A foot is 12 inches long."],
       "Is one inch {x} centimetres?"),
    _f("kg_pounds", "units", "num",
       ["Roughly how many pounds are in a kilogram?", "About how many pounds does one kilogram equal?"],
       "2.2", "1.5", "One kilogram is about 2.2 pounds.",
       "So a 10 kilogram bag weighs about 22 pounds.",
       ["One kilogram is about 2.2 pounds.", "One pound is about 0.45 kilograms.",
        "A 10 kilogram bag weighs about 22 pounds."],
       "Is one kilogram about {x} pounds?"),
    _f("sqrt_144", "arithmetic", "num",
       ["What is the square root of 144?", "Which number squared gives 144?"],
       "12", "14", "The square root of 144 is 12.", "That is because 12 times 12 equals 144.",
       ["The square root of 144 is 12.", "12 times 12 equals 144.", "So 144 is a perfect square."],
       "Is {x} the square root of 144?"),
    _f("quarter_of_80", "arithmetic", "num",
       ["What is 25% of 80?", "How much is 25 percent of 80?"],
       "20", "16", "25% of 80 is 20.", "Taking a quarter of 80 gives 20.",
       ["25% of 80 is 20.", "25% is the same as one quarter.", "80 divided by 4 is 20."],
       "Is 25% of 80 equal to {x}?"),
    _f("smallest_prime", "arithmetic", "num",
       ["What is the smallest prime number?", "Which number is the smallest prime?"],
       "2", "1", "The smallest prime number is 2.", "It is also the only even prime.",
       ["The smallest prime number is 2.", "It is the only even prime.",
        "A prime has exactly two divisors."],
       "Is {x} the smallest prime number?"),
    _f("triangle_angles", "arithmetic", "num",
       ["How many degrees do the angles of a triangle add up to?",
        "What is the sum of the angles in a triangle, in degrees?"],
       "180", "360", "The angles of a triangle add up to 180 degrees.",
       "This is true for every triangle drawn on a flat surface.",
       ["A triangle's angles add up to 180 degrees.", "This holds on a flat surface.",
        "An equilateral triangle has three 60 degree angles."],
       "Do the angles of a triangle add up to {x} degrees?"),
    _f("hexagon_sides", "arithmetic", "num",
       ["How many sides does a hexagon have?", "How many sides are on a hexagon?"],
       "6", "8", "A hexagon has 6 sides.", "Honeycomb cells are a well-known example.",
       ["A hexagon has 6 sides.", "A regular hexagon has equal sides.",
        "Honeycomb cells are hexagons."],
       "Does a hexagon have {x} sides?"),
    _f("pi_digits", "arithmetic", "num",
       ["What is pi rounded to two decimal places?", "What is the value of pi to two decimal places?"],
       "3.14", "3.41", "Pi rounded to two decimal places is 3.14.",
       "It is the ratio of a circle's circumference to its diameter.",
       ["Pi is about 3.14.", "It relates a circle's circumference to its diameter.",
        "Its digits never end or repeat."],
       "Is pi about {x} to two decimal places?"),

    # ---- cooking
    _f("boil_egg", "cooking", "phrase",
       ["How long should you boil an egg for a firm yolk?",
        "How many minutes does a hard-boiled egg need?"],
       "10 minutes", "2 minutes", "Boil an egg for about 10 minutes to get a firm yolk.",
       "Then cool it in cold water so it is easier to peel.",
       ["Lower the egg into boiling water.", "Cook it for about 10 minutes.",
        "Cool it in cold water before peeling."],
       "Should you boil an egg for about {x} to get a firm yolk?"),
    _f("rice_water", "cooking", "num",
       ["How many cups of water are usually used for 1 cup of white rice?",
        "For one cup of white rice, how many cups of water do you normally use?"],
       "2", "5", "Use about 2 cups of water for 1 cup of white rice.",
       "Simmer it covered until the water is absorbed.",
       ["Use about 2 cups of water per cup of rice.", "Bring it to a boil, then simmer covered.",
        "Let it rest for a few minutes before serving."],
       "Do you usually use about {x} cups of water for 1 cup of white rice?"),
    _f("bread_rise", "cooking", "word",
       ["What makes bread dough rise?", "Which ingredient makes bread dough rise?"],
       "yeast", "salt", "Yeast makes bread dough rise by producing carbon dioxide gas.",
       "The gas forms bubbles that get trapped in the dough.",
       ["Yeast is what makes dough rise.", "It feeds on sugars in the flour.",
        "It gives off bubbles of carbon dioxide."],
       "Is {x} what makes bread dough rise?"),
    _f("chicken_temp", "cooking", "num",
       ["What internal temperature in Celsius should cooked chicken reach?",
        "How hot, in degrees Celsius, should the inside of cooked chicken get?"],
       "74", "50", "Chicken is safe to eat once it reaches 74 degrees Celsius inside.",
       "Check it with a meat thermometer in the thickest part.",
       ["Cook chicken to 74 degrees Celsius inside.", "Measure in the thickest part.",
        "Juices should run clear, not pink."],
       "Should cooked chicken reach {x} degrees Celsius inside?"),
    _f("pasta_salt", "cooking", "phrase",
       ["Why do cooks add salt to pasta water?", "What is the point of salting pasta water?"],
       "season the pasta", "make the water boil much faster",
       "Cooks salt pasta water mainly to season the pasta.",
       "The amount used barely changes the boiling point.",
       ["Salt is added mainly to season the pasta.", "Pasta absorbs some of the salty water.",
        "The boiling point barely changes."],
       "Do cooks salt pasta water mainly to {x}?"),
    _f("baking_soda", "cooking", "word",
       ["What is the chemical name of baking soda?", "What is baking soda, chemically speaking?"],
       "sodium bicarbonate", "sodium chloride", "Baking soda is sodium bicarbonate.",
       "It releases carbon dioxide when mixed with an acid.",
       ["Baking soda is sodium bicarbonate.", "It reacts with acids to make gas.",
        "The gas helps cakes and pancakes rise."],
       "Is baking soda {x}?"),
    _f("egg_freshness", "cooking", "phrase",
       ["How can you test if an egg is fresh using a bowl of water?",
        "What is the water test for checking whether an egg is fresh?"],
       "sinks and lies flat", "rises to the top",
       "A fresh egg sinks and lies flat in a bowl of water.",
       "Eggs get lighter as they age because air enters the shell.",
       ["A fresh egg sinks and lies flat.", "An older egg tilts upward.",
        "Air enters the shell as an egg ages."],
       "Does a fresh egg {x} in a bowl of water?"),

    # ---- programming
    _f("python_len", "programming", "word",
       ["Which Python function returns the length of a list?",
        "In Python, what built-in gives you the number of items in a list?"],
       "len()", "size()", "In Python, len() returns the length of a list.",
       "For example, len([1, 2, 3]) returns 3.",
       ["Use len() to get a list's length.", "len([1, 2, 3]) returns 3.",
        "It also works on strings and dictionaries."],
       "Does {x} return the length of a list in Python?"),
    _f("python_index", "programming", "num",
       ["What index does the first element of a Python list have?",
        "In Python, at which index does a list start?"],
       "0", "1", "The first element of a Python list has index 0.",
       "So my_list[0] gives the first item.",
       ["Python lists start at index 0.", "So my_list[0] is the first item.",
        "Negative indexes count from the end."],
       "Does the first element of a Python list have index {x}?"),
    _f("python_comment", "programming", "word",
       ["What character starts a comment in Python?", "Which symbol begins a Python comment?"],
       "#", "//", "A comment in Python starts with the # character.",
       "Everything after it on that line is ignored.",
       ["Python comments start with #.", "The rest of the line is ignored.",
        "Comments explain code to human readers."],
       "Does a Python comment start with {x}?"),
    _f("floor_division", "programming", "num",
       ["What does 7 // 2 evaluate to in Python?", "In Python, what is the result of 7 // 2?"],
       "3", "3.5", "In Python, 7 // 2 evaluates to 3.",
       "The // operator does floor division and drops the remainder.",
       ["7 // 2 gives 3 in Python.", "The // operator is floor division.",
        "Use 7 / 2 if you want the decimal result."],
       "Does 7 // 2 evaluate to {x} in Python?"),
    _f("list_append", "programming", "word",
       ["Which list method adds an item to the end of a Python list?",
        "How do you add one item to the end of a list in Python?"],
       "append()", "push()", "The append() method adds an item to the end of a list.",
       "For example, nums.append(4) puts 4 at the end.",
       ["Use the append() method.", "It adds one item to the end.",
        "It changes the list in place."],
       "Does {x} add an item to the end of a Python list?"),
    _f("git_status", "programming", "word",
       ["Which git command shows the current state of your working tree?",
        "What git command tells you which files have changed?"],
       "git status", "git push", "The git status command shows the state of your working tree.",
       "It lists changed, staged and untracked files.",
       ["Run git status to see the state of your files.", "It shows staged changes.",
        "It also lists untracked files."],
       "Does {x} show the state of your working tree?"),
    _f("http_404", "programming", "word",
       ["What does the HTTP status code 404 mean?", "What does a 404 error mean on a website?"],
       "Not Found", "Server Error",
       "HTTP 404 means Not Found: the server could not find the requested page.",
       "It usually points to a broken link or a mistyped address.",
       ["HTTP 404 means Not Found.", "The requested page does not exist on the server.",
        "Broken links often cause it."],
       "Does HTTP 404 mean {x}?"),
    _f("binary_101", "programming", "num",
       ["What is the binary number 101 in decimal?", "What decimal value does binary 101 have?"],
       "5", "3", "The binary number 101 equals 5 in decimal.",
       "It is one four, no twos and one one.",
       ["Binary 101 is 5 in decimal.", "The left digit is worth four.",
        "The right digit is worth one."],
       "Is binary 101 equal to {x} in decimal?"),
    _f("bits_byte", "programming", "num",
       ["How many bits are in a byte?", "How many bits make up one byte?"],
       "8", "16", "A byte is made of 8 bits.", "Each bit is either a zero or a one.",
       ["A byte has 8 bits.", "Each bit is a zero or a one.",
        "One byte can store 256 different values."],
       "Are there {x} bits in a byte?"),
    _f("bool_zero", "programming", "word",
       ["What does bool(0) return in Python?", "In Python, what is the value of bool(0)?"],
       "False", "True", "In Python, bool(0) returns False.",
       "Zero counts as a false value, while other numbers count as true.",
       ["bool(0) returns False.", "Zero is treated as false.", "Any other number gives a true value."],
       "Does bool(0) return {x} in Python?"),
    _f("string_upper", "programming", "word",
       ["Which string method converts text to uppercase in Python?",
        "How do you turn a Python string into capital letters?"],
       "upper()", "lower()", "The upper() method converts a string to uppercase.",
       "It returns a new string and leaves the original unchanged.",
       ["Call the upper() method on the string.", "It returns a new string.",
        "The original string is not changed."],
       "Does {x} convert a Python string to uppercase?"),

    # ---- history
    _f("moon_landing", "history", "year",
       ["In what year did humans first land on the Moon?", "When was the first crewed Moon landing?"],
       "1969", "1972", "The first crewed Moon landing was in 1969.",
       "Neil Armstrong and Buzz Aldrin walked on the Moon during Apollo 11.",
       ["Apollo 11 landed on the Moon in 1969.", "Neil Armstrong stepped out first.",
        "Buzz Aldrin joined him soon after."],
       "Did the first crewed Moon landing happen in {x}?"),
    _f("ww2_end", "history", "year",
       ["In what year did World War II end?", "When did the Second World War end?"],
       "1945", "1950", "World War II ended in 1945.",
       "Fighting stopped in Europe in May and in Asia in September.",
       ["World War II ended in 1945.", "Germany surrendered in May.",
        "Japan surrendered in September."],
       "Did World War II end in {x}?"),
    _f("berlin_wall", "history", "year",
       ["In what year did the Berlin Wall fall?", "When did the Berlin Wall come down?"],
       "1989", "1979", "The Berlin Wall fell in 1989.",
       "Its fall led to German reunification the following year.",
       ["The Berlin Wall fell in 1989.", "It had divided the city since 1961.",
        "Germany reunified the next year."],
       "Did the Berlin Wall fall in {x}?"),
    _f("first_us_president", "history", "word",
       ["Who was the first president of the United States?",
        "Which man served as the first US president?"],
       "George Washington", "Thomas Jefferson",
       "George Washington was the first president of the United States.",
       "He served two terms, from 1789 to 1797.",
       ["George Washington was the first US president.", "He took office in 1789.",
        "He served two terms."],
       "Was {x} the first president of the United States?"),
    _f("columbus", "history", "year",
       ["In what year did Columbus first reach the Americas?",
        "When did Christopher Columbus first arrive in the Americas?"],
       "1492", "1592", "Columbus first reached the Americas in 1492.",
       "He landed in the Caribbean while looking for a sea route to Asia.",
       ["Columbus reached the Americas in 1492.", "He landed in the Caribbean.",
        "He was looking for a route to Asia."],
       "Did Columbus first reach the Americas in {x}?"),
    _f("magna_carta", "history", "year",
       ["In what year was the Magna Carta sealed?", "When was the Magna Carta agreed?"],
       "1215", "1415", "The Magna Carta was sealed in 1215.",
       "It placed limits on the power of the English king.",
       ["The Magna Carta was sealed in 1215.", "King John agreed to it.",
        "It limited the king's power."],
       "Was the Magna Carta sealed in {x}?"),
    _f("printing_press", "history", "word",
       ["Who developed the movable-type printing press in Europe?",
        "Which inventor brought the printing press with movable type to Europe?"],
       "Johannes Gutenberg", "Leonardo da Vinci",
       "Johannes Gutenberg developed the movable-type printing press in Europe.",
       "He built it around 1440 in Germany.",
       ["Johannes Gutenberg built the press.", "He worked around 1440 in Germany.",
        "It made books much cheaper to produce."],
       "Did {x} develop the movable-type printing press in Europe?"),
    _f("mona_lisa", "history", "word",
       ["Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"],
       "Leonardo da Vinci", "Michelangelo", "Leonardo da Vinci painted the Mona Lisa.",
       "It hangs in the Louvre museum in Paris.",
       ["Leonardo da Vinci painted the Mona Lisa.", "He worked on it in the early 1500s.",
        "It hangs in the Louvre."],
       "Did {x} paint the Mona Lisa?"),
    _f("titanic", "history", "year",
       ["In what year did the Titanic sink?", "When did the Titanic go down?"],
       "1912", "1921", "The Titanic sank in 1912.", "It hit an iceberg on its first voyage.",
       ["The Titanic sank in 1912.", "It struck an iceberg.", "It was on its first voyage."],
       "Did the Titanic sink in {x}?"),

    # ---- grammar and language
    _f("plural_mouse", "grammar", "word",
       ["What is the plural of 'mouse'?", "How do you write more than one mouse?"],
       "mice", "mouses", "The plural of mouse is mice.",
       "It is an irregular plural, like goose and geese.",
       ["The plural of mouse is mice.", "It is an irregular plural.",
        "Goose and geese follow a similar pattern."],
       "Is {x} the plural of mouse?"),
    _f("past_go", "grammar", "word",
       ["What is the past tense of 'go'?", "What is the simple past form of the verb 'go'?"],
       "went", "goed", "The past tense of go is went.",
       "It is irregular, so it does not take the usual -ed ending.",
       ["The past tense of go is went.", "It is an irregular verb.",
        "The past participle is gone."],
       "Is {x} the past tense of go?"),
    _f("synonym_happy", "grammar", "word",
       ["What is a synonym for 'happy'?", "Give a word that means the same as 'happy'."],
       "joyful", "gloomy", "A synonym for happy is joyful.",
       "Cheerful and glad are other good options.",
       ["Joyful is a synonym for happy.", "Cheerful also works.", "So does glad."],
       "Is {x} a synonym for happy?"),
    _f("antonym_ancient", "grammar", "word",
       ["What is the opposite of 'ancient'?", "Which word means the opposite of 'ancient'?"],
       "modern", "old", "The opposite of ancient is modern.",
       "Ancient describes the distant past, while modern describes the present.",
       ["Modern is the opposite of ancient.", "Ancient refers to the distant past.",
        "Modern refers to recent times."],
       "Is {x} the opposite of ancient?"),
    _f("noun_def", "grammar", "phrase",
       ["What is a noun?", "How would you define a noun?"],
       "a person, place, thing or idea", "an action or state",
       "A noun is a word for a person, place, thing or idea.",
       "Examples include teacher, city and happiness.",
       ["A noun names a person, place, thing or idea.", "Teacher and city are nouns.",
        "Abstract ideas like happiness are nouns too."],
       "Is a noun a word for {x}?"),
    _f("adjective", "grammar", "word",
       ["What part of speech describes a noun?", "What do you call a word that describes a noun?"],
       "adjective", "adverb", "A word that describes a noun is an adjective.",
       "In the phrase 'a red car', red is the adjective.",
       ["An adjective describes a noun.", "In 'a red car', red is the adjective.",
        "Adjectives can compare, as in bigger or biggest."],
       "Is a word that describes a noun called an {x}?"),
    _f("question_mark", "grammar", "word",
       ["What punctuation mark ends a direct question?", "Which punctuation mark goes at the end of a question?"],
       "question mark", "full stop", "A direct question ends with a question mark.",
       "For example, you would write: Where are you going?",
       ["A direct question ends with a question mark.", "Statements end with a full point.",
        "Indirect questions do not need one."],
       "Does a direct question end with a {x}?"),
    _f("plural_child", "grammar", "word",
       ["What is the plural of 'child'?", "How do you say more than one child?"],
       "children", "childs", "The plural of child is children.",
       "It is one of a few English plurals that end in -en.",
       ["The plural of child is children.", "It is irregular.", "Ox and oxen work the same way."],
       "Is {x} the plural of child?"),

    # ---- health and safety
    _f("hand_washing", "health", "phrase",
       ["How long should you wash your hands with soap?",
        "For how many seconds should you scrub your hands when washing them?"],
       "20 seconds", "2 seconds", "Wash your hands with soap for at least 20 seconds.",
       "Scrub the backs, between the fingers and under the nails.",
       ["Wash with soap for at least 20 seconds.", "Scrub between your fingers.",
        "Rinse and dry with a clean towel."],
       "Should you wash your hands with soap for at least {x}?"),
    _f("minor_burn", "health", "phrase",
       ["What should you do first for a minor burn?", "What is the first thing to do for a small burn?"],
       "cool running water", "a layer of butter",
       "For a minor burn, first hold it under cool running water for about 20 minutes.",
       "Then cover it loosely with a clean, non-fluffy dressing.",
       ["Cool the burn under cool running water.", "Keep it there for about 20 minutes.",
        "Cover it loosely with a clean dressing."],
       "Should you first treat a minor burn with {x}?"),
    _f("sunscreen_spf", "health", "num",
       ["What minimum SPF do skin doctors commonly recommend for sunscreen?",
        "What SPF should everyday sunscreen have at least?"],
       "30", "5", "Skin doctors commonly recommend sunscreen with at least SPF 30.",
       "Reapply it about every two hours when you are outdoors.",
       ["Use sunscreen of at least SPF 30.", "Reapply it every two hours outdoors.",
        "Reapply after swimming."],
       "Is SPF {x} a commonly recommended minimum for sunscreen?"),
    _f("eu_emergency", "health", "num",
       ["What number calls emergency services across the European Union?",
        "Which phone number reaches emergency services anywhere in the EU?"],
       "112", "411", "In the European Union, dial 112 for emergency services.",
       "It works from any phone and is free of charge.",
       ["Dial 112 for emergencies in the EU.", "The call is free.", "It works from any phone."],
       "Is {x} the emergency number across the European Union?"),
    _f("adult_sleep", "health", "phrase",
       ["How many hours of sleep do most adults need per night?",
        "How much sleep does a typical adult need each night?"],
       "7 to 9 hours", "3 to 4 hours", "Most adults need 7 to 9 hours of sleep per night.",
       "Regular sleep supports mood, memory and overall health.",
       ["Most adults need 7 to 9 hours of sleep.", "A regular bedtime helps.",
        "Good sleep supports memory and mood."],
       "Do most adults need {x} of sleep per night?"),
    _f("bleach_ammonia", "health", "phrase",
       ["Is it safe to mix bleach and ammonia when cleaning?",
        "What happens if you mix bleach with ammonia?"],
       "toxic gas", "harmless steam",
       "Never mix bleach and ammonia, because together they release toxic gas.",
       "Use one product at a time and keep the room well aired.",
       ["Never mix bleach and ammonia.", "Together they release toxic gas.",
        "Keep the room well aired when cleaning."],
       "Does mixing bleach and ammonia release {x}?"),
    _f("resting_heart_rate", "health", "phrase",
       ["What is a normal resting heart rate for adults, in beats per minute?",
        "What range counts as a normal adult resting pulse?"],
       "60 to 100", "20 to 40", "A normal adult resting heart rate is 60 to 100 beats per minute.",
       "Very fit people can have a lower rate than that.",
       ["A normal resting rate is 60 to 100 beats per minute.", "Athletes often have lower rates.",
        "Measure it while sitting still."],
       "Is a normal adult resting heart rate {x} beats per minute?"),
    _f("nosebleed", "health", "phrase",
       ["How should you stop a nosebleed?", "What is the right way to handle a nosebleed?"],
       "lean forward", "tilt your head back",
       "To stop a nosebleed, lean forward and pinch the soft part of your nose.",
       "Keep pinching for about 10 minutes before checking.",
       ["Sit down and lean forward.", "Pinch the soft part of your nose.",
        "Hold it for about 10 minutes."],
       "Should you {x} to stop a nosebleed?"),

    # ---- everyday how-tos
    _f("jar_lid", "howto", "phrase",
       ["How can you loosen a stuck jar lid?", "What is a simple trick to open a stuck jar?"],
       "warm water", "cold water", "Run the lid under warm water for a minute, then twist it.",
       "The heat makes the metal lid expand slightly.",
       ["Run the lid under warm water.", "Dry your hands for a better grip.",
        "Twist firmly while holding the jar steady."],
       "Does running a stuck jar lid under {x} help loosen it?"),
    _f("water_plant", "howto", "phrase",
       ["How can you tell when a potted plant needs water?",
        "When should you water a houseplant?"],
       "top inch of soil is dry", "leaves look shiny",
       "Water a potted plant when the top inch of soil is dry.",
       "Push a finger into the soil to check.",
       ["Water when the top inch of soil is dry.", "Check by pushing a finger into the soil.",
        "Make sure the pot can drain."],
       "Should you water a potted plant when the {x}?"),
    _f("wine_stain", "howto", "phrase",
       ["How should you treat a fresh red wine stain?",
        "What is the best first step for a fresh wine spill on fabric?"],
       "blot it gently", "rub it hard",
       "To treat a fresh wine stain, blot it gently and rinse with cold water.",
       "Rubbing pushes the wine deeper into the fabric.",
       ["Blot it gently with a clean cloth.", "Rinse it with cold water.",
        "Wash it before the stain dries."],
       "Should you {x} to treat a fresh wine stain?"),
    _f("toothbrush", "howto", "phrase",
       ["How often should you replace your toothbrush?", "When should you get a new toothbrush?"],
       "every three months", "every five years",
       "Replace your toothbrush every three months, or sooner if the bristles fray.",
       "Worn bristles do not clean teeth as well.",
       ["Replace it every three months.", "Replace it sooner if the bristles fray.",
        "Also replace it after an illness."],
       "Should you replace a toothbrush about {x}?"),
    _f("smoke_alarm", "howto", "phrase",
       ["How often should you test a home smoke alarm?",
        "How regularly should a smoke alarm be tested?"],
       "once a month", "once every ten years",
       "Test a home smoke alarm once a month by pressing its test button.",
       "Change the battery as soon as it starts to chirp.",
       ["Test the alarm once a month.", "Press and hold the test button.",
        "Replace the battery when it chirps."],
       "Should you test a smoke alarm {x}?"),
    _f("phone_battery", "howto", "phrase",
       ["What is an easy way to make a phone battery last longer?",
        "How can I make my phone's battery last through the day?"],
       "lower the screen brightness", "raise the screen brightness",
       "An easy way is to lower the screen brightness.",
       "The screen is one of the biggest drains on the battery.",
       ["Lower the screen brightness.", "Close apps you are not using.",
        "Turn on battery saver mode."],
       "Does it help battery life to {x}?"),
    _f("wash_colours", "howto", "word",
       ["What water temperature helps stop coloured clothes from fading?",
        "Should you wash coloured clothes in hot or cold water to keep them bright?"],
       "cold", "hot", "Washing clothes in cold water helps keep colours from fading.",
       "Cooler water is also gentler on most fabrics.",
       ["Wash colours in cold water.", "Turn clothes inside out.",
        "Skip the tumble dryer when you can."],
       "Does washing in {x} water help stop colours fading?"),

    # ---- definitions
    _f("inflation", "definitions", "phrase",
       ["What does inflation mean in economics?", "What is inflation?"],
       "rise in prices", "fall in prices", "Inflation is a general rise in prices over time.",
       "It means the same amount of money buys less than before.",
       ["Inflation is a general rise in prices.", "Money buys less as it goes on.",
        "Central banks try to keep it low and steady."],
       "Is inflation a general {x} over time?"),
    _f("mammal", "definitions", "phrase",
       ["What is a mammal?", "How would you define a mammal?"],
       "warm-blooded", "cold-blooded",
       "A mammal is a warm-blooded animal that feeds its young with milk.",
       "Humans, whales and dogs are all mammals.",
       ["Mammals are warm-blooded.", "They feed their young with milk.",
        "Most have hair or fur."],
       "Is a mammal a {x} animal?"),
    _f("democracy", "definitions", "phrase",
       ["What is democracy?", "How would you describe democracy in simple terms?"],
       "the people", "a single king",
       "Democracy is a system of government where power rests with the people.",
       "Citizens usually choose their leaders in elections.",
       ["In a democracy, power rests with the people.", "Citizens vote in elections.",
        "Leaders can be replaced peacefully."],
       "In a democracy, does power rest with {x}?"),
    _f("algorithm", "definitions", "phrase",
       ["What is an algorithm?", "How would you explain what an algorithm is?"],
       "step-by-step procedure", "type of computer chip",
       "An algorithm is a step-by-step procedure for solving a problem.",
       "A cooking recipe is an everyday example of one.",
       ["An algorithm is a step-by-step procedure.", "It solves a specific problem.",
        "A recipe is an everyday example."],
       "Is an algorithm a {x}?"),
    _f("evaporation", "definitions", "phrase",
       ["What is evaporation?", "What happens during evaporation?"],
       "liquid turns into a gas", "gas turns into a liquid",
       "Evaporation is when a liquid turns into a gas.",
       "Puddles drying in the sun are a common example.",
       ["Evaporation is when a liquid turns into a gas.", "Heat speeds it up.",
        "Drying puddles are an example."],
       "Is evaporation when a {x}?"),
    _f("metaphor", "definitions", "phrase",
       ["What is a metaphor?", "How does a metaphor work?"],
       "without using like or as", "by using the word like",
       "A metaphor compares two things directly, without using like or as.",
       "For example, calling time a thief is a metaphor.",
       ["A metaphor compares two things directly.", "It does so without using like or as.",
        "Calling time a thief is an example."],
       "Does a metaphor compare two things {x}?"),
    _f("herbivore", "definitions", "phrase",
       ["What is a herbivore?", "What does a herbivore eat?"],
       "plants", "meat", "A herbivore is an animal that eats only plants.",
       "Cows and rabbits are common examples.",
       ["A herbivore eats only plants.", "Cows are herbivores.", "So are rabbits."],
       "Does a herbivore eat only {x}?"),
    _f("renewable_energy", "definitions", "phrase",
       ["What is renewable energy?", "What makes an energy source renewable?"],
       "naturally replenished", "used up for good",
       "Renewable energy comes from sources that are naturally replenished, like sun and wind.",
       "Coal and oil, by contrast, take millions of years to form.",
       ["Renewable sources are naturally replenished.", "Sun and wind are examples.",
        "Coal and oil are not renewable."],
       "Does renewable energy come from sources that are {x}?"),

    # ---- animals and nature
    _f("spider_legs", "animals", "num",
       ["How many legs does a spider have?", "How many legs do spiders have?"],
       "8", "6", "A spider has 8 legs.", "Insects have six, which is one way to tell them apart.",
       ["A spider has 8 legs.", "Insects have six legs.", "Spiders are arachnids, not insects."],
       "Does a spider have {x} legs?"),
    _f("largest_mammal", "animals", "word",
       ["What is the largest mammal on Earth?", "Which mammal is the biggest of all?"],
       "blue whale", "African elephant", "The blue whale is the largest mammal on Earth.",
       "It can grow to about 30 metres long.",
       ["The blue whale is the largest mammal.", "It can reach about 30 metres.",
        "It feeds mostly on tiny krill."],
       "Is the {x} the largest mammal on Earth?"),
    _f("bees_honey", "animals", "word",
       ["What do bees make from flower nectar?", "What food do honeybees produce from nectar?"],
       "honey", "milk", "Bees make honey from flower nectar.",
       "They store it in wax cells inside the hive.",
       ["Bees turn nectar into honey.", "They store it in wax cells.", "It feeds the hive in winter."],
       "Do bees make {x} from flower nectar?"),
    _f("fastest_land_animal", "animals", "word",
       ["What is the fastest land animal?", "Which animal runs fastest on land?"],
       "cheetah", "lion", "The cheetah is the fastest land animal.",
       "It can sprint at around 100 kilometres per hour.",
       ["The cheetah is the fastest land animal.", "It sprints at around 100 km per hour.",
        "It can only keep that up briefly."],
       "Is the {x} the fastest land animal?"),
    _f("penguins", "animals", "word",
       ["Where do most wild penguins live?", "In which half of the world do wild penguins mostly live?"],
       "Southern Hemisphere", "Arctic", "Most wild penguins live in the Southern Hemisphere.",
       "None live in the wild near the North Pole.",
       ["Most penguins live in the Southern Hemisphere.", "Many live around Antarctica.",
        "None live wild near the North Pole."],
       "Do most wild penguins live in the {x}?"),
)


def _generated_facts(rng: random.Random) -> list[Fact]:
    """A few seeded arithmetic and unit-conversion topics (the numbers are computed)."""
    out: list[Fact] = []
    factors = rng.sample([(a, b) for a in range(12, 30) for b in range(3, 10)], 3)
    for i, (a, b) in enumerate(factors):
        p = a * b
        wrong = p + rng.choice([-10, 10, -b, b])
        out.append(_f(f"multiply_{i}", "arithmetic", "num",
                      [f"What is {a} times {b}?", f"What do you get when you multiply {a} by {b}?"],
                      str(p), str(wrong),
                      f"{a} times {b} equals {p}.", f"You can check it: {p} divided by {b} gives back {a}.",
                      None, f"Is {a} times {b} equal to {{x}}?"))
    for i in range(2):
        a, b = rng.randint(120, 480), rng.randint(120, 480)
        s = a + b
        wrong = s + rng.choice([-100, 100, -10, 10])
        out.append(_f(f"add_{i}", "arithmetic", "num",
                      [f"What is {a} plus {b}?", f"What is the sum of {a} and {b}?"],
                      f"{s:,}", f"{wrong:,}",
                      f"{a} plus {b} equals {s:,}.", f"You can check it: {s:,} minus {b} gives back {a}.",
                      None, f"Does {a} plus {b} equal {{x}}?"))
    conversions = [
        ("metres_cm", "How many centimetres are in {n} metres?", "Convert {n} metres to centimetres.",
         "centimetres in {n} metres", 100, "Each metre has 100 centimetres."),
        ("hours_minutes", "How many minutes are in {n} hours?", "Convert {n} hours to minutes.",
         "minutes in {n} hours", 60, "Each hour has 60 minutes."),
        ("kg_grams", "How many grams are in {n} kilograms?", "Convert {n} kilograms to grams.",
         "grams in {n} kilograms", 1000, "Each kilogram has 1,000 grams."),
        ("days_hours", "How many hours are in {n} days?", "Convert {n} days to hours.",
         "hours in {n} days", 24, "Each day has 24 hours."),
    ]
    for name, q1, q2, phrase, factor, why in conversions:
        n = rng.randint(3, 9)
        v = n * factor
        wrong = v + factor if rng.random() < 0.5 else v - factor
        out.append(_f(f"convert_{name}", "units", "num", [q1.format(n=n), q2.format(n=n)],
                      f"{v:,}", f"{wrong:,}", f"There are {v:,} {phrase.format(n=n)}.",
                      f"{why[:-1]}, so {n} times {factor:,} gives {v:,}.",
                      None, f"Are there {{x}} {phrase.format(n=n)}?"))
    return out


# --------------------------------------------------------------------------------------------
# Technical one-sentence answers (the high-complexity side of the steerable complexity pairs)
# --------------------------------------------------------------------------------------------

# Each is one sentence, correct, contains the topic's answer and not its wrong answer, and says
# what ``Fact.sentence`` says in the vocabulary of the field. Generated topics get theirs from
# ``_generated_technical``.
TECHNICAL: dict[str, str] = {
    # ---- geography
    "capital_france": "Paris is the capital of France, seat of the executive and the bicameral Parliament "
                      "of the Fifth Republic's highly centralised unitary state.",
    "capital_japan": "Tokyo is the capital of Japan, seat of the National Diet and core of the most "
                     "populous metropolitan agglomeration in the world.",
    "capital_australia": "Canberra is the capital of Australia, a purpose-built federal seat in the Australian "
                         "Capital Territory, sited as a compromise between two rival state capitals.",
    "capital_canada": "Ottawa is the capital of Canada, seat of its federal parliamentary system under a "
                      "constitutional monarchy, on the Ontario bank of the Ottawa River.",
    "capital_brazil": "Brasília is the capital of Brazil, a modernist planned city laid out by Lúcio Costa "
                      "and Oscar Niemeyer to move the federal seat into the interior.",
    "largest_ocean": "The Pacific Ocean is the largest ocean, spanning about 165 million square kilometres "
                     "and holding the Mariana Trench, the deepest known bathymetric point.",
    "tallest_mountain": "Mount Everest is the tallest mountain above sea level, its summit of about 8,849 metres "
                        "raised by the collision of the Indian and Eurasian plates.",
    "continents": "The most common model counts 7 continents, a conventional division of the landmasses "
                  "rather than a strict geological classification of continental crust.",
    "largest_hot_desert": "The Sahara is the largest hot desert in the world, a subtropical arid zone kept dry by "
                          "the descending air of the Hadley circulation.",
    "largest_country": "Russia is the largest country by area, covering about 17.1 million square kilometres of "
                       "northern Eurasia across eleven time zones.",
    "equator": "The equator, the great circle at 0 degrees latitude, divides Earth into the Northern and "
               "Southern Hemispheres and lies equidistant from both poles.",
    # ---- science
    "water_boils": "At a standard pressure of 101.325 kPa, water boils at 100 degrees Celsius, where its "
                   "vapour pressure equals the ambient pressure.",
    "water_formula": "Water is H2O, a polar molecule in which one oxygen atom forms covalent bonds with two "
                     "hydrogen atoms at an angle of about 104.5 degrees.",
    "planet_count": "Our solar system has 8 planets under the 2006 IAU definition, which requires a body to "
                    "have cleared the neighbourhood around its orbit.",
    "largest_planet": "Jupiter is the largest planet in our solar system, a gas giant of mostly hydrogen and "
                      "helium with about 318 times the mass of Earth.",
    "red_planet": "Mars is called the Red Planet because ferric oxide in its regolith and airborne dust "
                  "reflects mostly the red wavelengths of sunlight.",
    "photosynthesis_gas": "During photosynthesis, plants release oxygen as a by-product of photolysis, the "
                          "light-driven splitting of water in photosystem II.",
    "speed_of_light": "In a vacuum, light travels at about 300,000 kilometres per second, the invariant "
                      "constant c of special relativity.",
    "adult_bones": "An adult skeleton has 206 bones, fewer than at birth because ossification fuses "
                   "elements such as those of the skull and the sacrum.",
    "heart_chambers": "The human heart has 4 chambers, two atria and two ventricles, which keep the pulmonary "
                      "and systemic circulations separate.",
    "gravity_law": "Isaac Newton formulated universal gravitation: the force between two masses is "
                   "proportional to their product and inversely proportional to the square of their distance.",
    "water_freezes_f": "Water freezes at 32 degrees Fahrenheit at standard pressure, the point at which the "
                       "liquid and ice phases coexist in equilibrium.",
    "dna_name": "DNA stands for deoxyribonucleic acid, a double-stranded polymer of nucleotides whose "
                "complementary base pairing encodes genetic information.",
    "closest_star": "The closest star to Earth is the Sun, a G-type main-sequence star about one astronomical "
                    "unit away that fuses hydrogen into helium.",
    "liquid_metal": "The metal mercury is liquid at room temperature because relativistic effects bind its "
                    "outer electrons tightly and weaken its metallic bonding.",
    # ---- arithmetic and units
    "leap_year": "A leap year has 366 days under the Gregorian rule: years divisible by 4, except centuries "
                 "not divisible by 400.",
    "seconds_hour": "An hour has 3,600 seconds, since 60 minutes times 60 seconds per minute gives 3,600 "
                    "seconds, the SI base unit of time.",
    "mile_km": "One mile is about 1.6 kilometres, since the international mile is defined as exactly "
               "1,609.344 metres.",
    "inch_cm": "One inch is exactly 2.54 centimetres, because the international yard and pound agreement "
               "of 1959 defined the inch as 25.4 millimetres.",
    "kg_pounds": "One kilogram is about 2.2 pounds, since the avoirdupois pound is defined as exactly "
                 "0.45359237 kilograms.",
    "sqrt_144": "The principal square root of 144 is 12, because 12 squared is 144 and the square root "
                "function returns the non-negative root.",
    "quarter_of_80": "25% of 80 is 20, since a percentage is a fraction of one hundred, so 0.25 times 80 "
                     "gives 20.",
    "smallest_prime": "The smallest prime number is 2, the only even prime, since every larger even number "
                      "has 2 as a proper divisor.",
    "triangle_angles": "In Euclidean geometry the interior angles of a triangle add up to 180 degrees, a "
                       "consequence of the parallel postulate.",
    "hexagon_sides": "A hexagon is a polygon with 6 sides, and a regular one has interior angles of 120 "
                     "degrees each.",
    "pi_digits": "Pi, the ratio of a circle's circumference to its diameter, is an irrational number that "
                 "rounds to 3.14 at two decimal places.",
    # ---- cooking
    "boil_egg": "Boil an egg for about 10 minutes so that the yolk proteins coagulate fully, which happens "
                "above roughly 70 degrees Celsius.",
    "rice_water": "White rice takes about 2 cups of water per cup, enough for starch gelatinisation plus "
                  "what evaporates during a covered simmer.",
    "bread_rise": "Yeast makes dough rise by fermenting sugars into carbon dioxide and ethanol, and the gas "
                  "is trapped by the gluten network.",
    "chicken_temp": "Chicken is safe once its core reaches 74 degrees Celsius, where Salmonella and "
                    "Campylobacter are killed almost instantly.",
    "pasta_salt": "Cooks salt pasta water to season the pasta, since the boiling-point elevation from that "
                  "much salt is only a fraction of a degree.",
    "baking_soda": "Baking soda is sodium bicarbonate, NaHCO3, a base that reacts with acids to release "
                   "carbon dioxide in chemical leavening.",
    "egg_freshness": "A fresh egg sinks and lies flat because its air cell is small, while moisture loss "
                     "through the porous shell enlarges the cell of an older egg.",
    # ---- programming
    "python_len": "The built-in len() calls the list's __len__ method and returns its number of items in "
                  "constant time.",
    "python_index": "Python sequences are zero-based, so index 0 addresses the first element, at an offset "
                    "of zero from the start of the underlying array.",
    "python_comment": "A Python comment starts with #, and the tokenizer discards everything from it to the "
                      "end of the physical line.",
    "floor_division": "In Python, 7 // 2 evaluates to 3, because the // operator returns the floor of the "
                      "quotient, rounding toward negative infinity.",
    "list_append": "The append() method adds an item to the end of a list in place, in amortised constant "
                   "time, using the spare capacity of the dynamic array.",
    "git_status": "The git status command compares the working tree and the index with HEAD to report "
                  "staged, unstaged and untracked changes.",
    "http_404": "HTTP 404 Not Found is a client-error status code: the server could not map the request "
                "URI to any resource.",
    "binary_101": "Binary 101 equals 5 in decimal, since positional base-2 notation gives one four, no twos "
                  "and one one.",
    "bits_byte": "A byte is 8 bits, an octet of binary digits that can encode 256 distinct values.",
    "bool_zero": "In Python, bool(0) returns False, because numeric zero is falsy under the truth-value "
                 "testing protocol.",
    "string_upper": "The upper() method returns a new string with every cased character mapped to "
                    "uppercase, since Python strings are immutable.",
    # ---- history
    "moon_landing": "The first crewed Moon landing was Apollo 11 in 1969, when the lunar module Eagle "
                    "touched down in the Sea of Tranquility.",
    "ww2_end": "World War II ended in 1945, with the unconditional surrender of Germany in May and the "
               "formal surrender of Japan in September.",
    "berlin_wall": "The Berlin Wall fell in 1989, when the collapsing East German regime opened the border "
                   "crossings amid the revolutions across Eastern Europe.",
    "first_us_president": "George Washington was the first president of the United States, chosen unanimously "
                          "by the Electoral College under the new Constitution.",
    "columbus": "Columbus reached the Americas in 1492, landing in the Bahamas on a voyage sponsored by "
                "the Spanish Crown to find a westward route to Asia.",
    "magna_carta": "The Magna Carta was sealed in 1215 by King John, a charter that subjected royal "
                   "authority to the law and the counsel of the barons.",
    "printing_press": "Johannes Gutenberg developed movable-type printing in Europe, combining cast metal "
                      "type, oil-based ink and an adapted screw press.",
    "mona_lisa": "Leonardo da Vinci painted the Mona Lisa in oil on a poplar panel, using sfumato, the "
                 "technique of soft tonal transitions.",
    "titanic": "The Titanic sank in 1912 after an iceberg breached more of its forward watertight "
               "compartments than the design could survive.",
    # ---- grammar
    "plural_mouse": "The plural of mouse is mice, a relic of Germanic umlaut, where a vowel change rather "
                    "than a suffix marks the plural.",
    "past_go": "The past tense of go is went, a suppletive form taken from the verb wend rather than "
               "derived from the stem of go.",
    "synonym_happy": "Joyful is a near-synonym of happy, sharing its core sense of positive affect with a "
                     "more intense, expressive connotation.",
    "antonym_ancient": "Modern is the antonym of ancient, the two adjectives marking opposite ends of a "
                       "scale of temporal distance.",
    "noun_def": "A noun is a word for a person, place, thing or idea, a lexical category that can head a "
                "noun phrase and act as subject or object.",
    "adjective": "A word that modifies a noun is an adjective, used attributively before the noun or "
                 "predicatively after a linking verb.",
    "question_mark": "A direct interrogative sentence ends with a question mark, whereas an indirect "
                     "question embedded in a statement does not.",
    "plural_child": "The plural of child is children, a double plural that stacks the weak -en ending on "
                    "an older -er plural.",
    # ---- health
    "hand_washing": "Wash your hands with soap for at least 20 seconds, long enough for the surfactants to "
                    "break up the lipid membranes of many pathogens.",
    "minor_burn": "For a minor burn, first apply cool running water for about 20 minutes to limit the depth "
                  "of the thermal injury to the tissue.",
    "sunscreen_spf": "Skin doctors recommend at least SPF 30, which filters about 97 percent of UVB "
                     "radiation when applied at the tested density.",
    "eu_emergency": "In the European Union, 112 is the harmonised emergency number, routed free of charge "
                    "to a public safety answering point.",
    "adult_sleep": "Most adults need 7 to 9 hours of sleep per night to complete several cycles of non-REM "
                   "and REM sleep.",
    "bleach_ammonia": "Never mix bleach and ammonia: hypochlorite reacts with ammonia to release toxic gas, "
                      "chloramine vapours that irritate the airways.",
    "resting_heart_rate": "A normal adult resting heart rate is 60 to 100 beats per minute, paced by the "
                          "sinoatrial node under autonomic control.",
    "nosebleed": "To stop a nosebleed, lean forward and compress the soft nose, since most anterior "
                 "bleeds come from the vessels of Kiesselbach's plexus.",
    # ---- household tips
    "jar_lid": "Run the lid under warm water, since the metal lid expands more than the glass and the "
               "seal loosens.",
    "water_plant": "Water a potted plant when the top inch of soil is dry, which keeps the root zone moist "
                   "without waterlogging that starves roots of oxygen.",
    "wine_stain": "To treat a fresh wine stain, blot it gently and rinse with cold water, since heat and "
                  "friction set the anthocyanin pigments in the fibres.",
    "toothbrush": "Replace your toothbrush every three months, because frayed bristles lose the stiffness "
                  "needed to disrupt the plaque biofilm.",
    "smoke_alarm": "Test a smoke alarm once a month with its test button, which checks the sensing circuit "
                   "and the piezoelectric sounder.",
    "phone_battery": "An easy way is to lower the screen brightness, since the display backlight is one of "
                     "the largest power consumers of the device.",
    "wash_colours": "Washing in cold water keeps colours from fading, because lower temperatures slow the "
                    "migration of dye molecules out of the fibres.",
    # ---- definitions
    "inflation": "Inflation is a sustained rise in prices, usually measured as the annual change of a "
                 "consumer price index.",
    "mammal": "A mammal is a warm-blooded vertebrate of the class Mammalia, defined by mammary glands that "
              "produce milk for its young.",
    "democracy": "Democracy is government in which sovereignty rests with the people, exercised directly "
                 "or through elected representatives.",
    "algorithm": "An algorithm is a finite step-by-step procedure that maps every valid input to an output "
                 "through a well-defined sequence of operations.",
    "evaporation": "Evaporation is when a liquid turns into a gas at its surface, as molecules with enough "
                   "kinetic energy overcome the intermolecular forces.",
    "metaphor": "A metaphor maps one concept onto another directly, without using like or as, as when "
                "time is called a thief.",
    "herbivore": "A herbivore is a primary consumer that eats only plants, often relying on gut microbes to "
                 "digest cellulose.",
    "renewable_energy": "Renewable energy comes from flows that are naturally replenished on human "
                        "timescales, such as solar radiation and wind.",
    # ---- animals
    "spider_legs": "A spider has 8 legs, as do all arachnids, whose bodies consist of a cephalothorax and "
                   "an abdomen.",
    "largest_mammal": "The blue whale is the largest mammal, a baleen whale that filter-feeds on krill and "
                      "can exceed 150 tonnes.",
    "bees_honey": "Bees make honey by regurgitating flower nectar and evaporating it, while enzymes such as "
                  "invertase split its sucrose.",
    "fastest_land_animal": "The cheetah is the fastest land animal, reaching about 100 kilometres per hour in "
                           "short anaerobic sprints.",
    "penguins": "Most wild penguins live in the Southern Hemisphere, where cold currents supply the fish "
                "and krill they feed on.",
}

_PRODUCT = re.compile(r"(\d+) times (\d+) equals (\d+)\.")
_SUM = re.compile(r"(\d+) plus (\d+) equals ([\d,]+)\.")
_CONVERSION = re.compile(r"There are ([\d,]+) (\w+) in (\d+) (\w+)\.")
_FACTOR = re.compile(r"Each (\w+) has ([\d,]+) (\w+)")


def _generated_technical(fact: Fact) -> str | None:
    """The technical sentence of a generated arithmetic or unit-conversion topic (from its numbers)."""
    if m := _PRODUCT.fullmatch(fact.sentence):
        a, b, p = (int(g) for g in m.groups())
        tens, ones = a - a % 10, a % 10
        return (f"By the distributive law, {a} × {b} = ({tens} + {ones}) × {b} = {tens * b} + {ones * b} "
                f"= {p}.")
    if m := _SUM.fullmatch(fact.sentence):
        a, b = int(m[1]), int(m[2])
        parts = [(a // p % 10 * p, b // p % 10 * p) for p in (100, 10, 1)]
        terms = " + ".join(f"({x} + {y})" for x, y in parts)
        return f"Decomposing by place value, {a} + {b} = {terms} = {m[3]}."
    if (m := _CONVERSION.fullmatch(fact.sentence)) and (f := _FACTOR.match(fact.explanation)):
        value, small, n, big = m.groups()
        return (f"Applying the conversion factor 1 {f[1]} = {f[2]} {small}, dimensional analysis gives "
                f"{n} {big} × {f[2]} {small} per {f[1]} = {value} {small}.")
    return None


# --------------------------------------------------------------------------------------------
# Prompt and response text
# --------------------------------------------------------------------------------------------

INSTRUCTIONS = {
    "one_sentence": ("Answer in one sentence.", "Please reply in a single sentence.",
                     "Keep your answer to one sentence.", "Respond with one sentence only."),
    "under_20": ("Answer in under 20 words.", "Use fewer than 20 words.",
                 "Keep your reply under 20 words.", "Reply in less than 20 words."),
    "two_sentences": ("Answer in exactly two sentences.", "Explain in exactly two sentences.",
                      "Reply with two sentences, no more and no less.", "Use exactly two sentences."),
    "bullets": ("Give exactly three bullet points.", "Answer with exactly three bullet points.",
                "Reply as a list of exactly three bullets.", "Use three bullet points, no more."),
    "short:num": ("Reply with just the number.", "Give only the number, nothing else.",
                  "Answer with the number only."),
    "short:year": ("Reply with just the year.", "Give only the year, nothing else.",
                   "Answer with the year only."),
    "short:word": ("Reply with just the answer, no full sentence.",
                   "Give only the answer itself, nothing else.",
                   "Answer with the term only, no explanation."),
    "yes_no": ("Start your answer with 'Yes' or 'No', then give a reason.",
               "Begin with Yes or No, then give a short reason.",
               "Answer Yes or No first, then explain briefly.",
               "Start with 'Yes' or 'No' and add one reason."),
}
PROMPT_OPENERS = ("Quick question: ", "Hi! ", "I'm curious. ", "Help me out here. ")

DOMAIN_NOUN = {
    "geography": "geography", "science": "science", "arithmetic": "maths", "units": "measurement",
    "cooking": "cooking", "programming": "programming", "history": "history",
    "grammar": "grammar", "health": "health", "howto": "household tips",
    "definitions": "words and ideas", "animals": "animals",
}

EVASIVE = (
    "I'm not sure about that. You may want to look it up in a reliable source.",
    "That depends on a lot of things, so I can't really give you an answer.",
    "Good question! People see this differently, and it is hard to pin down.",
    "I would rather not guess. Try asking someone who knows more about {noun}.",
    "It's hard to say for certain, since everyone has their own view on {noun}.",
    "You can probably find this online if you search for it.",
    "I don't have enough information to answer that properly.",
    "There is no simple answer here; it varies a lot from case to case.",
)
EVASIVE_SHORT = ("Hard to say.", "Not sure.", "It depends.", "No idea, sorry.")
EVASIVE_YES_NO = (
    "Maybe. It really depends on who you ask.",
    "It's hard to say either way without more details.",
    "That depends on the situation, so I can't say for sure.",
    "Possibly, but I would not want to commit to an answer.",
)
EVASIVE_BULLETS = (
    ("It depends on the situation.", "There are many factors to consider.",
     "A reliable source could tell you more."),
    ("Opinions differ on this.", "It is hard to be certain.", "You could search online."),
    ("This is a complicated topic.", "Experts may know more.", "It varies from case to case."),
)
RAMBLE_INTROS = (
    "Well, this is one of those questions that lots of people wonder about at some point.",
    "Great question, and honestly there is so much that could be said here, so let me think out loud.",
    "Before I answer, it is worth saying that questions about {noun} have a long and fascinating history.",
    "Ah, I love questions like this, because they always remind me how much there is to learn.",
)
RAMBLE_MIDDLES = (
    "Different people have different opinions, and that is part of what makes it interesting.",
    "I remember reading about things like this ages ago, and it has stuck with me.",
    "There are books, videos and whole courses about it, if you ever have the time.",
)
RAMBLE_OFF_TOPIC = (
    "By the way, did you know that honey can last for years if it is sealed well?",
    "It also makes me think of how octopuses have three hearts, which is wild.",
    "Speaking of which, the Eiffel Tower grows a little taller in the summer heat.",
)
RAMBLE_OUTROS = (
    "Anyway, I hope that helps a little, and there is always more to learn!",
    "So yes, lots to think about there, really.",
    "Anyway, that is my take, for what it is worth.",
)
LONG_PADDING = (
    "This is a common question, and it is well worth remembering for later.",
    "Many people learn this at school, and it often comes up in quizzes and everyday conversation.",
    "It is one of those facts that turns out to be useful more often than you might expect.",
)
PADDING_PREFIXES = ("Sure! ", "Great question. ", "Happy to help. ")
PADDING_SUFFIXES = (" Hope this helps!", " Let me know if you want more detail.", " I hope that is useful!")


# --------------------------------------------------------------------------------------------
# Format checks (the same rules the tests re-implement)
# --------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def words(text: str) -> int:
    return len(text.split())


def sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


def follows_format(template: str, text: str) -> bool:
    """Whether ``text`` obeys the explicit format instruction of ``template``."""
    if template == "short":
        return "\n" not in text and words(text) <= 3
    if template == "one_sentence":
        return "\n" not in text and sentences(text) == 1
    if template == "under_20":
        return words(text) < 20
    if template == "two_sentences":
        return "\n" not in text and sentences(text) == 2
    if template == "bullets":
        lines = text.split("\n")
        return len(lines) == 3 and all(line.startswith("- ") and len(line) > 2 for line in lines)
    if template == "yes_no":
        return re.match(r"(Yes|No)\b[.,!]?\s+\S", text) is not None
    raise ValueError(f"unknown template {template!r}")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _term(term: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(term) + r"(?!\w|[.,]\d)")


def _contains(text: str, term: str) -> bool:
    return any(_term(t).search(text) for t in {term, _cap(term)})


def _swap(text: str, answer: str, wrong: str) -> str:
    pairs = [(answer, wrong)] + ([(_cap(answer), _cap(wrong))] if _cap(answer) != answer else [])
    for src, dst in pairs:
        text = _term(src).sub(lambda _m, d=dst: d, text)
    return text


# --------------------------------------------------------------------------------------------
# Pair construction
# --------------------------------------------------------------------------------------------

def _scores(h, c, coh, cx, verb, inst) -> dict[str, int]:
    return dict(zip(SCORE_KEYS, (h, c, coh, cx, verb, inst)))


def _base_complexity(fact: Fact, template: str) -> int:
    if template == "short":
        return 0
    bump = 1 if fact.domain in ("science", "programming", "definitions") else 0
    return (2 if template in ("two_sentences", "bullets") else 1) + bump


_BASE_VERBOSITY = {"short": 0, "one_sentence": 1, "under_20": 1, "yes_no": 1,
                   "two_sentences": 2, "bullets": 2}


def _bullets(points) -> str:
    return "\n".join(f"- {p}" for p in points)


def _chosen_text(fact: Fact, template: str, yes: bool) -> str:
    if template == "short":
        return fact.answer
    if template in ("one_sentence", "under_20"):
        return fact.sentence
    if template == "two_sentences":
        return f"{fact.sentence} {fact.explanation}"
    if template == "bullets":
        return _bullets(fact.points)
    if template == "yes_no":
        return f"{'Yes' if yes else 'No'}. {fact.sentence}"
    raise ValueError(template)


def _imperfect_chosen(fact: Fact, template: str, yes: bool, rng: random.Random, cx: int, vb: int):
    """Correct but padded: still clearly better than any rejected response."""
    pre, suf = rng.choice(PADDING_PREFIXES), rng.choice(PADDING_SUFFIXES)
    if template == "short":
        text = f"The answer is {fact.answer}."
        return text, _scores(3, 4, 4, cx, vb + 1, 3)
    if template in ("one_sentence", "under_20"):
        text = f"{pre}{fact.sentence}{suf}"
        inst = 4 if follows_format(template, text) else 3
        return text, _scores(3, 4, 4, cx, vb + 1, inst)
    if template == "two_sentences":
        return f"{pre}{fact.sentence} {fact.explanation}", _scores(3, 4, 4, cx, vb + 1, 3)
    if template == "bullets":
        return f"Here are three points:\n{_bullets(fact.points)}{suf}", _scores(3, 4, 4, cx, vb + 1, 4)
    if template == "yes_no":
        text = f"{'Yes' if yes else 'No'}. {fact.sentence} {fact.explanation}{suf}"
        return text, _scores(3, 4, 4, cx, vb + 2, 4)
    raise ValueError(template)


def _ramble(fact: Fact, rng: random.Random, with_answer: bool) -> str:
    noun = DOMAIN_NOUN[fact.domain]
    intro = rng.choice(RAMBLE_INTROS).format(noun=noun)
    middle = rng.choice(RAMBLE_MIDDLES)
    core = fact.sentence if with_answer else rng.choice(RAMBLE_OFF_TOPIC)
    outro = rng.choice(RAMBLE_OUTROS)
    text = f"{intro} {middle} {core} {outro}"
    if words(text) > MAX_RESPONSE_WORDS - 2:
        text = f"{intro} {core} {outro}"
    return text


def _rejected(fact: Fact, template: str, flaw: str, yes: bool, rng: random.Random, cx: int, vb: int):
    """The rejected text for one flaw type, and scores that describe that text."""
    chosen = _chosen_text(fact, template, yes)
    noun = DOMAIN_NOUN[fact.domain]
    if flaw == "wrong_fact":
        if template == "yes_no":
            text = f"{'No' if yes else 'Yes'}. {_swap(fact.sentence, fact.answer, fact.wrong)}"
        else:
            text = _swap(chosen, fact.answer, fact.wrong)
        multi = template in ("two_sentences", "bullets")
        return text, _scores(1, 1 if multi else 0, 3 if multi else 4, cx, vb, 5)
    if flaw == "ignores_format":
        if template == "short":
            text, h, verb = f"{fact.sentence} {fact.explanation}", 2, 2
        elif template == "one_sentence":
            text, h, verb = f"{fact.sentence} {fact.explanation}", 3, 2
        elif template == "under_20":
            text, h, verb = f"{fact.sentence} {fact.explanation} {rng.choice(LONG_PADDING)}", 3, 3
        elif template == "two_sentences":
            text, h, verb = _bullets(fact.points or (fact.sentence, fact.explanation)), 2, 2
        elif template == "bullets":
            text, h, verb = " ".join(fact.points), 2, 2
        else:  # yes_no: correct content, but it does not open with Yes or No
            text, h, verb = f"{fact.sentence} {fact.explanation}", 3, 2
        return text, _scores(h, 4, 4, cx, verb, 1)
    if flaw == "evasive":
        if template == "short":
            text = rng.choice(EVASIVE_SHORT)
        elif template == "yes_no":
            text = rng.choice(EVASIVE_YES_NO)
        elif template == "bullets" and rng.random() < 0.5:
            text = _bullets(rng.choice(EVASIVE_BULLETS))
        else:
            text = rng.choice(EVASIVE).format(noun=noun)
        inst = 2 if follows_format(template, text) else 1
        return text, _scores(0, 1, 3, 0, 0 if template == "short" else 1, inst)
    if flaw == "rambling":
        with_answer = rng.random() < 0.6
        text = _ramble(fact, rng, with_answer)
        return text, _scores(1 if with_answer else 0, 3 if with_answer else 1, 2, 1, 4, 1)
    if flaw == "incomplete":
        if template in ("one_sentence", "under_20"):
            toks = fact.sentence.rstrip(".!?").split()
            text = " ".join(toks[: max(2, (len(toks) + 1) // 2)]) + "..."
            return text, _scores(1, 2, 2, cx, 0, 3)
        if template == "two_sentences":
            return fact.sentence, _scores(2, 3, 4, cx, 1, 2)
        if template == "bullets":
            keep = rng.choice((1, 2))
            return _bullets(fact.points[:keep]), _scores(2, 3, 4, cx, 1, 2)
        if template == "yes_no":
            return f"{'Yes' if yes else 'No'}.", _scores(2, 3, 4, 0, 0, 2)
    raise ValueError(f"flaw {flaw!r} does not apply to template {template!r}")


def applicable_flaws(template: str) -> tuple[str, ...]:
    return tuple(f for f in FLAWS if not (f == "incomplete" and template == "short"))


def chosen_wins(chosen: dict, rejected: dict) -> bool:
    """The project's pair rule: higher helpfulness, tie broken by the sum of the other scores."""
    if chosen["helpfulness"] != rejected["helpfulness"]:
        return chosen["helpfulness"] > rejected["helpfulness"]
    rest = [k for k in SCORE_KEYS if k != "helpfulness"]
    return sum(chosen[k] for k in rest) > sum(rejected[k] for k in rest)


def _templates_for(fact: Fact, index: int, rng: random.Random) -> list[str]:
    """The templates (prompts) one topic yields.

    One of one_sentence / under_20 (alternating), plus the other templates the fact supports; to
    keep the set small, topics keep at most four templates (even ``index``) or three (odd), and
    which ones are dropped rotates through the optional templates.
    """
    out = ["one_sentence" if index % 2 == 0 else "under_20"]
    if fact.kind != "phrase":
        out.append("short")
    if fact.points:
        out += ["two_sentences", "bullets"]
    elif fact.kind != "phrase":
        out.append("two_sentences")
    if fact.yes_no:
        out.append("yes_no")
    keep = 4 if index % 4 in (0, 3) else 3
    optional = out[1:]
    rng.shuffle(optional)
    return [out[0], *sorted(optional[: keep - 1], key=TEMPLATES.index)]


def _prompt(fact: Fact, template: str, rng: random.Random, yes: bool) -> str:
    if template == "yes_no":
        question = fact.yes_no.format(x=fact.answer if yes else fact.wrong)
        question = _cap(question)
    else:
        question = rng.choice(fact.questions)
    key = f"short:{fact.kind}" if template == "short" else template
    instruction = rng.choice(INSTRUCTIONS[key])
    if rng.random() < 0.25:
        return f"{instruction} {question}"
    opener = rng.choice(PROMPT_OPENERS) if rng.random() < 0.12 else ""
    return f"{opener}{question} {instruction}"


def _check_fact(fact: Fact) -> None:
    where = f"sample fact {fact.topic!r}"
    assert _contains(fact.sentence, fact.answer), f"{where}: answer not in sentence"
    assert sentences(fact.sentence) == 1 and words(fact.sentence) < 20, f"{where}: sentence"
    assert sentences(fact.explanation) == 1, f"{where}: explanation is not one sentence"
    assert not fact.sentence.startswith(("Yes", "No ")), f"{where}: sentence starts with Yes/No"
    texts = [fact.sentence, fact.explanation, *(fact.points or ())]
    for t in texts:
        assert not _contains(t, fact.wrong), f"{where}: wrong answer appears in {t!r}"
    if fact.points:
        assert len(fact.points) == 3 and all(sentences(p) == 1 for p in fact.points), where
        assert any(_contains(p, fact.answer) for p in fact.points), f"{where}: answer not in points"
    if fact.kind != "phrase":
        assert words(fact.answer) <= 3, f"{where}: short answer too long"


def _pair(fact: Fact, template: str, flaw: str, imperfect: bool, rng: random.Random) -> tuple[dict, dict]:
    yes = rng.random() < 0.5
    prompt = _prompt(fact, template, rng, yes)
    cx, vb = _base_complexity(fact, template), _BASE_VERBOSITY[template]
    if imperfect:
        chosen_text, chosen_scores = _imperfect_chosen(fact, template, yes, rng, cx, vb)
    else:
        chosen_text, chosen_scores = _chosen_text(fact, template, yes), _scores(4, 4, 4, cx, vb, 5)
    rejected_text, rejected_scores = _rejected(fact, template, flaw, yes, rng, cx, vb)
    record = {
        "prompt": prompt,
        "chosen": {"response": chosen_text, **chosen_scores},
        "rejected": {"response": rejected_text, **rejected_scores},
    }
    label = {"topic": fact.topic, "domain": fact.domain, "template": template, "flaw": flaw,
             "chosen_imperfect": imperfect, "yes": yes if template == "yes_no" else None, "steer": None}
    _check_pair(record, label)
    return record, label


def _check_pair(record: dict, label: dict) -> None:
    where = f"sample pair {label['topic']}/{label['template']}/{label['flaw']}"
    chosen, rejected = record["chosen"], record["rejected"]
    assert chosen["response"] != rejected["response"], f"{where}: identical responses"
    assert chosen_wins(chosen, rejected), f"{where}: chosen does not beat rejected"
    assert words(record["prompt"]) <= MAX_PROMPT_WORDS, f"{where}: prompt too long"
    for side in (chosen, rejected):
        assert 1 <= words(side["response"]) <= MAX_RESPONSE_WORDS, f"{where}: response length"
    template = label["template"]
    if not label["chosen_imperfect"]:
        assert follows_format(template, chosen["response"]), f"{where}: chosen breaks the format"
    if label["flaw"] in ("wrong_fact",):
        assert follows_format(template, rejected["response"]), f"{where}: wrong_fact breaks format"
    if label["flaw"] in ("ignores_format", "rambling"):
        assert not follows_format(template, rejected["response"]), f"{where}: format not broken"


def _split_topics(facts: list[Fact], plan: dict[str, list[str]], rng: random.Random) -> set[str]:
    """Hold out whole topics, cycling over domains, until ~TEST_PAIRS_TARGET pairs are in test."""
    by_domain: dict[str, list[Fact]] = {}
    for fact in facts:
        by_domain.setdefault(fact.domain, []).append(fact)
    domains = sorted(by_domain)
    for d in domains:
        rng.shuffle(by_domain[d])
    rng.shuffle(domains)
    test: set[str] = set()
    count = 0
    while count < TEST_PAIRS_TARGET:
        for d in domains:
            if count >= TEST_PAIRS_TARGET or len(by_domain[d]) <= 3:
                continue
            fact = by_domain[d].pop()
            test.add(fact.topic)
            count += len(plan[fact.topic])
    return test


def _assign_flaws(items: list[tuple[Fact, str]], rng: random.Random) -> list[str]:
    """Balanced flaw assignment: each item gets the least-used flaw that applies to it."""
    counts = {f: 0 for f in FLAWS}
    out = []
    for _fact, template in items:
        options = list(applicable_flaws(template))
        rng.shuffle(options)
        flaw = min(options, key=lambda f: counts[f])
        counts[flaw] += 1
        out.append(flaw)
    return out


# --------------------------------------------------------------------------------------------
# Steerable pairs: two correct responses that differ on one dimension only
# --------------------------------------------------------------------------------------------

def technical_sentence(fact: Fact) -> str:
    """The technical one-sentence answer of a topic (the high side of its complexity pair)."""
    text = TECHNICAL.get(fact.topic) or _generated_technical(fact)
    if text is None:
        raise ValueError(f"sample fact {fact.topic!r} has no technical sentence (add one to TECHNICAL)")
    return text


def _content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


# Topics whose least repetitive point still reads badly after the explanation.
_NO_EXTRA_POINT = frozenset({"moon_landing", "synonym_happy", "antonym_ancient"})


def _extra_point(fact: Fact) -> str | None:
    """The bullet point that adds most to ``sentence`` + ``explanation``, or None when every point
    mostly repeats them (then the detailed answer has two sentences instead of three)."""
    if not fact.points or fact.topic in _NO_EXTRA_POINT:
        return None
    said = _content_words(fact.sentence) | _content_words(fact.explanation)

    def overlap(point: str) -> float:
        own = _content_words(point)
        return len(own & said) / len(own)

    best = min(fact.points, key=overlap)
    return best if overlap(best) < EXTRA_POINT_MAX_OVERLAP else None


def _steer_pairs(fact: Fact, rng: random.Random) -> list[tuple[dict, dict]]:
    """One verbosity pair and one complexity pair for a topic, each prompted by one of its two
    questions with no format instruction. Both responses are correct, helpful, coherent and obey
    the (absent) instruction; they differ only on the pair's dimension. The pair rule (equal
    helpfulness, larger sum of the other scores) makes the high-scored response the chosen one."""
    questions = list(fact.questions[:2])
    rng.shuffle(questions)
    cx = _base_complexity(fact, "one_sentence")
    plain = (fact.sentence, _scores(4, 4, 4, cx, 1, 5))
    extra = _extra_point(fact)
    detailed = " ".join([fact.sentence, fact.explanation, *([extra] if extra else [])])
    high = {"verbosity": (detailed, _scores(4, 4, 4, cx, 3 if extra else 2, 5)),
            "complexity": (technical_sentence(fact), _scores(4, 4, 4, min(4, cx + 2), 1, 5))}
    out = []
    for dimension, question in zip(STEER_DIMENSIONS, questions):
        (chosen_text, chosen_scores), (rejected_text, rejected_scores) = high[dimension], plain
        record = {"prompt": question,
                  "chosen": {"response": chosen_text, **chosen_scores},
                  "rejected": {"response": rejected_text, **rejected_scores}}
        label = {"topic": fact.topic, "domain": fact.domain, "template": OPEN_TEMPLATE, "flaw": None,
                 "chosen_imperfect": False, "yes": None, "steer": dimension}
        _check_steer_pair(record, label, fact)
        out.append((record, label))
    return out


def _check_steer_pair(record: dict, label: dict, fact: Fact) -> None:
    where = f"sample pair {label['topic']}/{label['steer']}"
    chosen, rejected = record["chosen"], record["rejected"]
    assert chosen["response"] != rejected["response"], f"{where}: identical responses"
    assert chosen_wins(chosen, rejected), f"{where}: chosen does not beat rejected"
    differ = [k for k in SCORE_KEYS if chosen[k] != rejected[k]]
    assert differ == [label["steer"]], f"{where}: scores differ on {differ}"
    assert chosen[label["steer"]] > rejected[label["steer"]], f"{where}: chosen is not the high side"
    assert 3 <= words(record["prompt"]) <= MAX_PROMPT_WORDS, f"{where}: prompt length"
    for side in (chosen, rejected):
        text = side["response"]
        assert 1 <= words(text) <= MAX_RESPONSE_WORDS, f"{where}: response length"
        assert _contains(text, fact.answer) and not _contains(text, fact.wrong), f"{where}: not correct"
        assert not text.startswith(("Yes", "No ")), f"{where}: starts with Yes/No"
    if label["steer"] == "complexity":
        assert sentences(chosen["response"]) == 1, f"{where}: technical answer is not one sentence"
    else:
        assert sentences(chosen["response"]) == chosen["verbosity"], f"{where}: verbosity vs sentences"


def build_with_labels(seed: int = 0) -> dict[str, list[tuple[dict, dict]]]:
    """``{"train": [(record, label), ...], "test": [...]}``.

    ``label`` is generator metadata that is NOT written to the files: topic, domain, template,
    flaw type of the rejected response (None for a steerable pair), whether the chosen response is
    the padded variant, and ``steer``: the one dimension a steerable pair differs on (else None).
    """
    rng = random.Random(seed)
    facts = list(FACTS) + _generated_facts(rng)
    topics = [f.topic for f in facts]
    assert len(set(topics)) == len(topics), "duplicate sample topic"
    for fact in facts:
        _check_fact(fact)
    plan = {f.topic: _templates_for(f, i, rng) for i, f in enumerate(facts)}
    test_topics = _split_topics(facts, plan, rng)

    out: dict[str, list[tuple[dict, dict]]] = {}
    for split in ("train", "test"):
        items = [(f, t) for f in facts if (f.topic in test_topics) == (split == "test")
                 for t in plan[f.topic]]
        rng.shuffle(items)
        flaws = _assign_flaws(items, rng)
        n_imperfect = max(1, round(IMPERFECT_CHOSEN_RATE * len(items)))
        imperfect = set(rng.sample(range(len(items)), n_imperfect))
        out[split] = [_pair(f, t, flaw, i in imperfect, rng)
                      for i, ((f, t), flaw) in enumerate(zip(items, flaws))]
    # Steerable pairs come after the flawed ones (so those stay exactly as they were), from the
    # same topics, hence the same split.
    for split in ("train", "test"):
        steer = [pair for f in facts if (f.topic in test_topics) == (split == "test")
                 for pair in _steer_pairs(f, rng)]
        rng.shuffle(steer)
        out[split] += steer

    prompts = [r["prompt"] for pairs in out.values() for r, _ in pairs]
    dupes = sorted({p for p in prompts if prompts.count(p) > 1})
    assert not dupes, f"duplicate sample prompts: {dupes}"
    return out


def topic_facts(seed: int = 0) -> dict[str, Fact]:
    """Every topic of ``build_with_labels(seed)`` (hand-written and generated) by its name."""
    return {f.topic: f for f in list(FACTS) + _generated_facts(random.Random(seed))}


def build(seed: int = 0) -> dict[str, list[dict]]:
    """The records of both splits, exactly as written to ``train.jsonl`` / ``test.jsonl``."""
    return {split: [r for r, _ in pairs] for split, pairs in build_with_labels(seed).items()}


def render(records: list[dict]) -> str:
    """The JSON-lines text of one split (UTF-8, one record per line, keys in schema order)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def summary(seed: int = 0) -> dict[str, dict[str, int]]:
    """Counts per split: pairs, topics, each flaw type, padded chosen responses, templates, and
    steerable pairs per dimension (``steer:verbosity``, ``steer:complexity``)."""
    out = {}
    for split, pairs in build_with_labels(seed).items():
        row = {"pairs": len(pairs), "topics": len({lab["topic"] for _, lab in pairs}),
               "chosen_imperfect": sum(lab["chosen_imperfect"] for _, lab in pairs)}
        for flaw in FLAWS:
            row[flaw] = sum(lab["flaw"] == flaw for _, lab in pairs)
        for template in TEMPLATES:
            row[f"template:{template}"] = sum(lab["template"] == template for _, lab in pairs)
        for dimension in STEER_DIMENSIONS:
            row[f"steer:{dimension}"] = sum(lab["steer"] == dimension for _, lab in pairs)
        out[split] = row
    return out


def write(seed: int = 0, directory: Path | None = None) -> dict[str, Path]:
    from amopo.sample_data import SAMPLE_DIR

    directory = Path(directory) if directory is not None else SAMPLE_DIR
    paths = {}
    for split, records in build(seed).items():
        path = directory / f"{split}.jsonl"
        path.write_text(render(records), encoding="utf-8")
        paths[split] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: package)")
    parser.add_argument("--check", action="store_true", help="only check the files are fresh")
    args = parser.parse_args(argv)
    if args.check:
        from amopo.sample_data import sample_path

        stale = [s for s, recs in build(args.seed).items()
                 if not sample_path(s).exists()
                 or sample_path(s).read_text(encoding="utf-8") != render(recs)]
        if stale:
            print(f"stale sample data: {', '.join(stale)}; run python -m amopo.sample_data.build")
            return 1
        print("sample data is up to date")
        return 0
    for split, path in write(args.seed, args.out).items():
        print(f"wrote {path}")
    for split, row in summary(args.seed).items():
        print(split, json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
