"""The generated corpus of bench/kg.py: made-up subjects, known answer passages, paraphrases.

    corpus = Corpus(seed=12)
    documents = corpus.documents(200)     # deterministic for a seed, each about one subject
    documents[0].questions[0]             # Question(text, passage, subject)
    render(document, "pdf")               # the document as txt, pdf or docx bytes

Every document is about one subject (a person, town, bridge, mountain, product, company or
festival) whose name is invented from syllables. No two documents have the same subject, so a
question naming it has exactly one right document, but 30 % of subjects reuse the invented
part of an earlier one's name ("Varnel", "the Varnel Bridge", "Ilsa Varnel", "Varnel
Works"), so the name's rare word alone does not single out the document. A document holds 2
to 4 *facts*, each one sentence (the answer passage) sitting in a paragraph of filler, and
2 or more paragraphs of filler only (2 + an exponential tail of mean 7, at most 40: most
documents take 2 to 7 chunks, a few 20).

A paragraph of filler is one sentence from a shared pool of templates (`FILLER`) among 3 to
6 *background* sentences put together from ~530 common nouns, adjectives and verbs. The
templates deliberately use the words questions use ("built", "people", "live", "open",
"cost", "climb", "visitors"), so a chunk of filler that names the subject competes with the
chunk holding the answer; they also name other documents' subjects in passing (a town's
travellers, a bridge nearby), as real documents do. 15 % of background sentences name the
subject too. The background words keep the term statistics near prose's: with templates
alone every chunk held half the question words ("first", "many", "long" were each in ~50 %
of chunks, which made an OR query touch most of the index); with them such a word is in 15
to 25 % of chunks (1,000-character chunks of English prose: roughly 10 to 15 %).

Each fact has hand-written question templates that paraphrase it: other verbs and nouns
("completed" -> "open ... built", "inhabitants" -> "people live"), another order, never the
passage's wording. What a question shares with its passage is mostly the subject's name;
`overlap()` measures it, so a reader can judge how hard the questions are.

Names are ASCII (the test PDFs are WinAnsi Helvetica) and are checked against every word of
the templates, so an invented name is never an English word of the corpus.
"""

from __future__ import annotations

import random
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inkstand.knowledge.search import STOP_WORDS
from tests.support import documents as files

WORD = re.compile(r"\w+")

# A fact: its passage, then the questions that paraphrase it (one is drawn per document).
Fact = tuple[str, tuple[str, ...]]

KINDS: dict[str, tuple[str, list[Fact]]] = {
    "bridge": ("the {N} Bridge", [
        ("{Sc} was completed in {year} by the engineer {P1}.",
         ("When did {S} open, and who built it?",
          "Who designed {S}, and in what year was it finished?")),
        ("The main span of {S} is {metres} metres long, resting on {small} stone piers.",
         ("How far does {S} stretch between its pillars?",
          "What is the length of the central section of {S}?")),
        ("About {big} vehicles cross {S} every day.",
         ("How many cars and lorries use {S} daily?",
          "What is the daily traffic over {S}?")),
        ("{Sc} was closed for repairs from {year2} to {year3} after a flood damaged its "
         "foundations.",
         ("Why was {S} shut, and for how long?",
          "What happened to {S} when the river rose, and when did traffic resume?")),
    ]),
    "town": ("{N}", [
        ("{Sc} has about {big} inhabitants, most of whom work in {industry}.",
         ("How many people live in {S}, and what do they mostly do for a living?",
          "What is the population of {S}, and what is its main industry?")),
        ("{Sc} was founded in {year} by settlers from {T2}.",
         ("When was {S} first established, and where did its original residents come from?",
          "Who started the town of {S}, and when?")),
        ("The oldest building in {S} is a {building} dating from {year0}.",
         ("What is the most ancient structure still standing in {S}?",
          "Which construction in {S} goes back the furthest?")),
        ("{Sc} lies on the {R} river, {small} kilometres upstream from the sea.",
         ("Which waterway runs through {S}, and how far is it from the coast?",
          "On what stream is {S} situated, and what distance separates it from the ocean?")),
    ]),
    "person": ("{F} {L}", [
        ("{Sc} was born in {T1} in {year}, the {order} child of a {trade}.",
         ("Where and when did {S} come into the world?",
          "What is the birthplace of {S}, and what did {poss} parents do?")),
        ("In {year2} {S} received the {Prize} Medal for {poss} research on {topic}.",
         ("Which honour was awarded to {S}, and for what work?",
          "What prize did {S} win?")),
        ("{Sc} taught {discipline} at the University of {T2} for {small} years.",
         ("Where was {S} a professor, and for how long?",
          "Which institution employed {S} as a lecturer?")),
        ("{Sc} died in {T3} in {year3} at the age of {age}.",
         ("How old was {S} at the end of {poss} life, and where did {pron} pass away?",
          "When and where did {S} die?")),
    ]),
    "product": ("the {N} {device}", [
        ("{Sc} weighs {grams} grams and its battery lasts {hours} hours.",
         ("How heavy is {S}, and how long does it run on a single charge?",
          "What is the weight of {S}, and what is its runtime?")),
        ("{Sc} sells for {price} euros and comes in {colour1} and {colour2}.",
         ("What does {S} cost, and which colours can you buy it in?",
          "How much is {S}, and what finishes are available?")),
        ("{Sc} is made by {Company} at a factory in {T1}.",
         ("Which firm manufactures {S}, and where is it produced?",
          "Who is the maker of {S}, and in what plant?")),
        ("{Sc} was launched in {month} {year4}, replacing the older {N2} {device}.",
         ("When did {S} first go on sale, and which model did it succeed?",
          "What did {S} supersede, and since when can customers buy it?")),
    ]),
    "company": ("{N} {suffix}", [
        ("{Sc} was founded in {year} by {P1} in {T1}.",
         ("Who started {S}, when, and in which city?",
          "When and where was {S} established, and by whom?")),
        ("{Sc} employs {big} people across {small} countries.",
         ("How large is the workforce of {S}, and in how many nations does it operate?",
          "How many staff does {S} have?")),
        ("{Sc} is best known for its {goods}, sold under the {Brand} brand.",
         ("What is {S} famous for making, and under what label?",
          "Which products made {S} well known?")),
        ("The headquarters of {S} moved to {T2} in {year2}.",
         ("Where is {S} based today, and since when?",
          "In which city does {S} have its head office now?")),
    ]),
    "mountain": ("Mount {N}", [
        ("{Sc} rises {metres} metres above sea level.",
         ("How tall is {S}?", "What is the height of {S}?")),
        ("The first recorded ascent of {S} was made in {year} by {P1}.",
         ("Who was the first to climb {S}, and when?",
          "Who reached the summit of {S} before anyone else?")),
        ("{Sc} is an extinct volcano that last erupted about {big} years ago.",
         ("Is {S} still active, and when did it last blow its top?",
          "When was the most recent eruption of {S}?")),
        ("A glacier covers the northern face of {S}, feeding the {R} river below.",
         ("What lies on the north side of {S}, and which stream does it supply?",
          "Is there ice on {S}, and where does its meltwater go?")),
    ]),
    "festival": ("the {N} Festival", [
        ("{Sc} takes place every {month} and draws around {big} visitors.",
         ("In which month is {S} held, and how big is its audience?",
          "When does {S} happen, and how many people attend?")),
        ("{Sc} began in {year} as a small gathering of {craft} makers.",
         ("How did {S} start out?", "What were the origins of {S}?")),
        ("Since {year2}, {S} has been held in {N2} Park in {T1}.",
         ("What venue hosts {S} these days?", "Where is {S} staged now?")),
        ("Tickets for {S} cost {price} euros, and children under {small} enter free.",
         ("How much is admission to {S}, and do kids pay?",
          "What is the entry fee for {S}?")),
    ]),
}  # fmt: skip

# The shared filler. {S}: this document's subject; {X}: another document's; {T}: a town;
# {P}: a person; {year}, {small}: numbers.
FILLER = (
    "Local historians have written several books about {S}, and the archive in {T} keeps "
    "letters from that period.",
    "Visitors often remark on the quiet streets, the old markets and the views across the valley.",
    "In recent years the council has debated plans to open a new museum, but the cost has "
    "delayed the work.",
    "Many people who live nearby remember the winters when the roads were closed for weeks.",
    "The regional newspaper published a long article on {S} in {year}, describing how much "
    "had changed.",
    "Travellers from {T} often stop at {X} on the way to the coast.",
    "Several schools organise trips to {S} every spring, and students write reports on what "
    "they see.",
    "The local economy depends on farming, trade and, more recently, tourism.",
    "A small cafe near {S} serves coffee and cakes to visitors in the summer.",
    "Records from the period are incomplete, and some dates remain disputed among researchers.",
    "Nobody is sure who built the first road to {T}, but it was used for centuries.",
    "The cost of maintenance has risen every year, and volunteers now help with the work.",
    "From the top of the hill visitors can see as far as {X} on a clear day.",
    "A guide who has worked there for {small} years tells stories about the past.",
    "The museum is open daily except in winter, when it closes at noon.",
    "Photographs from {year} show the area before the new houses were built.",
    "{P} wrote in a letter that {S} was the finest sight of the whole journey.",
    "The railway reached {T} in {year}, and with it came new shops, workers and visitors.",
    "Some people still climb the old steps for the view, although a lift was added later.",
    "The first maps of the area mark only a path, a well and a few farms.",
    "A documentary about {S} was filmed in {year} and shown on national television.",
    "Families come every weekend, and the car park is often full by ten in the morning.",
    "Local people say the weather changes quickly here, so walkers should bring a coat.",
    "The area is also known for its cheese, its bread and a strong dark beer.",
    "Plans to build a second road were dropped after a long public debate.",
    "A short walk leads from {S} to {X}, passing fields, a mill and an old chapel.",
    "In the summer the population grows, as holiday homes open and tourists arrive.",
    "{P}, who lived in {T} for most of her life, painted the scene many times.",
    "There is a small shop selling postcards, maps and books about the region.",
    "The annual report of the county mentions {S} on almost every page.",
    "Heavy rain in {year} caused damage across the region, and repairs took months.",
    "A bus runs from {T} every hour during the week and twice a day on Sundays.",
    "Students of history often compare {S} with {X}, although the two differ in many ways.",
    "The name is thought to come from an old word for a meeting place.",
    "Work on a new visitor centre started in {year} and is expected to take {small} years.",
    "Older residents still tell the story of the great fire, when the whole street burned.",
    "The best time to come is early autumn, when the crowds have gone home.",
    "Prices in the area have risen sharply, and young people find it hard to stay.",
    "An exhibition in {T} brought together objects, letters and drawings connected with {S}.",
    "According to {P}, the first plans were much larger than what was finally made.",
    "The long winter of {year} is still remembered, when snow lay for months.",
    "A festival of music and food is held in the square each summer.",
    "Engineers from {T} inspected the site in {year} and found it in good condition.",
    "A popular guidebook calls {S} one of the hidden treasures of the region.",
    "Trade with {X} made several families rich, and their houses still line the main street.",
    "The local library holds a collection of documents about {S}, open to anyone who asks.",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Background sentences: "The {adj} {noun} {verb} the {noun} {prep} the {adj} {noun}." from
# these lists, so that a chunk's words are spread over a vocabulary of ~600 as in prose: a
# mid-list word is in about one chunk in ten, not in every other as with templates alone.
NOUNS = _words("""
account age agreement air animal answer apple area arm art autumn bank basket beach bed
bell bench bird blanket boat body book border bottle box branch bread brick brother bucket
building cabin cable canal candle car card carpet cart castle cat cellar chair chapel
cheese child church circle city clay cliff clock cloth coat coffee collection corner
cottage council county court cousin cow crowd cup curtain customer dam daughter debate
desk diary dinner dish district doctor dog door drawing dress driver drum dust engine
evening factory family farm farmer father fence ferry field fire fish flag floor flower
fog food forest fountain friend fruit garden gate glass goat grain grass guest hall
hammer harbour harvest hat hedge hill history holiday horse hospital hotel house hut
island jacket journey judge kitchen knife ladder lake lamp lane language lantern law
lawyer leaf letter library light list lock machine manager map market meadow meal
meeting merchant milk mill minister mirror money morning mother mountain museum music
neighbour nephew newspaper night novel nurse oak office orchard owner painter paper
parish path pension pepper picture pier pig pipe plan plate poem poet pond porch post
pot priest prison pump queen rail rain record report rock roof room rope sailor salt
school sea season servant shed sheep shelf shop shore sign silver singer sister sky
slope soldier song spring square stable staircase station statue stone storm story
stove street student sugar summer supper table tailor tea teacher thread ticket timber
tool tower track trade train tree trial trunk tunnel uncle valley van village violin
wagon wall war warehouse watch water weather wedding well wheel window wine winter
wire witness wood wool worker workshop writer yard youth
""")
ADJECTIVES = _words("""
able ancient angry bare bitter black bold brief bright broad broken busy calm careful
cheap clean clear clever cold common cool crowded curious damp dark dear deep dirty dry
dull dusty eager early easy empty equal faint fair famous fine firm flat foreign formal
free fresh friendly full gentle glad golden grand great green grey happy hard heavy
hidden high hollow honest huge humble idle kind large late lazy little lonely loose
loud low loyal lucky mild modern narrow neat new noble odd open pale patient plain
pleasant polite poor precious private proud public pure quick quiet rare raw ready
rich rough round royal rude rural rusty sad safe sharp short shy silent simple slow
small smooth soft solid sour steep strange strict strong sudden sweet tall tender thick
thin tidy tiny tired tough true ugly usual vast warm weak wet white wide wild wise
wooden young
""")
VERBS = _words("""
accepted admired avoided borrowed bought brought buried burned carried caught chose
cleaned closed collected copied covered crossed cut decorated delivered described
destroyed discovered drew dropped emptied entered examined explained filled finished
fixed folded followed forgot found gathered guarded hid hired held improved inspected
joined kept knocked left lent lifted lit locked lost made mended missed moved noticed
opened ordered owned packed painted passed picked placed planted pointed polished
pulled pushed raised reached read rebuilt recorded remembered removed repaired replaced
rescued returned sent shared shook signed sold sorted spotted stole studied
supplied swept taught threw tied touched traded turned visited washed watched welcomed
wrapped wrote
""")
PREPOSITIONS = _words("""across after along among around before behind below beneath beside
beyond by inside near outside past toward under""")
BACKGROUND_PER_PARAGRAPH = (3, 6)
SUBJECT_IN_BACKGROUND = 0.15  # background sentences that begin with the document's subject

ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "r", "s",
          "sk", "st", "t", "tr", "v", "z")  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ar", "el")
CODAS = ("", "", "n", "l", "r", "s", "th", "nd", "rk", "sk", "v", "x")

CHOICES = {
    "industry": ("fishing", "forestry", "textiles", "mining", "shipbuilding", "tourism",
                 "wine making", "printing", "glassworks", "dairy farming"),
    "building": ("chapel", "granary", "watermill", "tower house", "customs house", "bakery",
                 "toll house", "monastery"),
    "order": ("eldest", "youngest", "second", "third"),
    "trade": ("blacksmith", "weaver", "shopkeeper", "ferryman", "carpenter", "schoolteacher",
              "miller", "tailor"),
    "topic": ("crystal growth", "bird migration", "soil chemistry", "ancient coins",
              "tidal currents", "river sediments", "plant hormones", "medieval music"),
    "discipline": ("geology", "mathematics", "botany", "economics", "architecture", "chemistry",
                   "linguistics", "astronomy"),
    "device": ("kettle", "lamp", "drill", "bicycle", "camera", "radio", "scooter", "blender",
               "heater", "tent"),
    "colour": ("red", "green", "grey", "yellow", "black", "white", "blue", "orange"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"),
    "suffix": ("Industries", "Group", "Works", "Holdings", "Trading", "Mills"),
    "goods": ("garden tools", "canned fish", "wool blankets", "paper goods", "bicycle parts",
              "kitchen knives", "roof tiles", "sewing machines"),
    "craft": ("pottery", "basket", "violin", "furniture", "glass", "lace", "clock", "rope"),
}  # fmt: skip
SHARED_NAME = 0.3  # subjects named after an earlier one: the Varnel Bridge, Varnel Works ...
MEAN_EXTRA_FILLER, MAX_FILLER = 7, 40  # filler paragraphs: 2 + an exponential tail
POOL_SIZE = 400  # towns and people the filler and the facts draw from, shared by all documents


@dataclass(frozen=True)
class Question:
    text: str
    passage: str  # the sentence of the document that answers it
    subject: str  # the subject's name as the question writes it


@dataclass(frozen=True)
class Document:
    name: str  # a file name without extension
    kind: str
    subject: str
    paragraphs: tuple[str, ...]  # the first is the title
    questions: tuple[Question, ...]


class Corpus:
    """Documents in a fixed order for a seed; later calls continue with new subjects."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.taken = _template_words()
        self.towns = [self.name() for _ in range(POOL_SIZE)]
        self.people = [f"{self.name()} {self.name()}" for _ in range(POOL_SIZE)]
        self.subjects: list[str] = []
        self.taken_subjects: set[str] = set()
        self.cores: list[str] = []  # the invented part of each subject's name (a surname)
        self.made = 0

    def name(self) -> str:
        """A new invented word: two syllables (sometimes three), never used before."""
        while True:
            count = 3 if self.rng.random() < 0.2 else 2
            word = "".join(
                self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                for _ in range(count)
            )
            if len(word) >= 4 and word not in self.taken:
                self.taken.add(word)
                return word.capitalize()

    def documents(self, count: int) -> list[Document]:
        return [self.document() for _ in range(count)]

    def document(self) -> Document:
        rng = self.rng
        kind = rng.choice(sorted(KINDS))
        shape, facts = KINDS[kind]
        slots = self._slots()
        if self.cores and rng.random() < SHARED_NAME:
            shared = slots | {"N": rng.choice(self.cores), "L": rng.choice(self.cores)}
            if shape.format(**shared) not in self.taken_subjects:
                slots = shared
        subject = shape.format(**slots)
        self.taken_subjects.add(subject)
        self.cores.append(slots["L" if kind == "person" else "N"])
        slots |= {"S": subject, "Sc": subject[0].upper() + subject[1:]}
        chosen = rng.sample(facts, rng.randint(2, 4))
        paragraphs = [self._paragraph(slots, passage.format(**slots)) for passage, _ in chosen]
        fillers = min(MAX_FILLER, 2 + int(rng.expovariate(1 / MEAN_EXTRA_FILLER)))
        paragraphs += [self._paragraph(slots) for _ in range(fillers)]
        rng.shuffle(paragraphs)
        questions = tuple(
            Question(rng.choice(asked).format(**slots), passage.format(**slots), subject)
            for passage, asked in chosen
        )
        self.subjects.append(subject)
        self.made += 1
        title = slots["Sc"]
        name = f"{self.made:06d}-{slots['N'].lower()}"
        return Document(name, kind, subject, (title, *paragraphs), questions)

    def _slots(self) -> dict[str, str]:
        rng, pick = self.rng, self.rng.choice
        year = rng.randint(1760, 1960)
        she = rng.random() < 0.5
        colours = rng.sample(CHOICES["colour"], 2)
        slots = {key: pick(values) for key, values in CHOICES.items()}
        return slots | {
            "N": self.name(), "N2": self.name(), "F": self.name(), "L": self.name(),
            "Prize": self.name(), "Brand": self.name(), "R": self.name(),
            "Company": f"{self.name()} {pick(CHOICES['suffix'])}",
            "P1": pick(self.people), "T1": pick(self.towns), "T2": pick(self.towns),
            "T3": pick(self.towns),
            "year0": str(year - rng.randint(50, 300)), "year": str(year),
            "year2": str(year + rng.randint(5, 30)), "year3": str(year + rng.randint(31, 60)),
            "year4": str(rng.randint(1995, 2025)), "age": str(rng.randint(55, 97)),
            "small": str(rng.randint(2, 40)), "big": f"{rng.randint(2_000, 95_999):,}",
            "metres": str(rng.randint(120, 4800)), "grams": str(rng.randint(150, 4000)),
            "hours": str(rng.randint(2, 60)), "price": str(rng.randint(15, 900)),
            "colour1": colours[0], "colour2": colours[1],
            "pron": "she" if she else "he", "poss": "her" if she else "his",
        }  # fmt: skip

    def _paragraph(self, slots: dict[str, str], passage: str | None = None) -> str:
        rng = self.rng
        sentences = [self._background(slots) for _ in range(rng.randint(*BACKGROUND_PER_PARAGRAPH))]
        sentences.insert(rng.randint(0, len(sentences)), self._filler(slots))
        if passage is not None:
            sentences.insert(rng.randint(0, len(sentences)), passage)
        return " ".join(sentences)

    def _background(self, slots: dict[str, str]) -> str:
        pick = self.rng.choice
        nouns = (pick(NOUNS), pick(NOUNS), pick(NOUNS))
        start = f"The {pick(ADJECTIVES)} {nouns[0]}"
        if self.rng.random() < SUBJECT_IN_BACKGROUND:
            start = slots["Sc"]
        verb, where, adjective = pick(VERBS), pick(PREPOSITIONS), pick(ADJECTIVES)
        return f"{start} {verb} the {nouns[1]} {where} the {adjective} {nouns[2]}."

    def _filler(self, slots: dict[str, str]) -> str:
        rng = self.rng
        other = rng.choice(self.subjects) if self.subjects else rng.choice(self.towns)
        text = rng.choice(FILLER).format(
            S=slots["S"],
            X=other,
            T=rng.choice(self.towns),
            P=rng.choice(self.people),
            year=rng.randint(1800, 2020),
            small=rng.randint(2, 40),
        )
        return text[0].upper() + text[1:]


def render(document: Document, form: str) -> bytes:
    """The document as the bytes of a .txt, .pdf or .docx file."""
    if form == "txt":
        return "\n\n".join(document.paragraphs).encode()
    if form == "pdf":
        return files.pdf(pdf_pages(document.paragraphs))
    if form == "docx":
        return files.docx(document.paragraphs, headings={0})
    raise ValueError(form)


def bundle(documents: list[Document], form: str) -> bytes:
    """Several documents as one file (a report of many pages), each titled by a heading."""
    paragraphs = [p for d in documents for p in d.paragraphs]
    if form == "pdf":
        return files.pdf(pdf_pages(paragraphs))
    titles, at = set(), 0
    for document in documents:
        titles.add(at)
        at += len(document.paragraphs)
    return files.docx(paragraphs, headings=titles)


LINES_PER_PAGE = 46  # 12 pt Helvetica at 14 pt leading, from 720 pt down to the margin
CHARS_PER_LINE = 90


def pdf_pages(paragraphs: tuple[str, ...] | list[str]) -> list[str]:
    """Paragraphs wrapped into lines and laid on pages, a page ending only between them."""
    pages: list[list[str]] = [[]]
    for paragraph in paragraphs:
        lines = textwrap.wrap(paragraph, CHARS_PER_LINE)
        if pages[-1] and len(pages[-1]) + len(lines) + 1 > LINES_PER_PAGE:
            pages.append([])
        if pages[-1]:
            pages[-1].append("")
        pages[-1].extend(lines)
    return ["\n".join(page) for page in pages]


def pdf_page_count(documents: list[Document]) -> int:
    return len(pdf_pages([p for d in documents for p in d.paragraphs]))


# -- how much a question shares with its passage --------------------------------------------


def content_words(text: str) -> set[str]:
    """Lower-case words less search.py's stop words: what the keyword query is made of."""
    return {w for w in (w.lower() for w in WORD.findall(text)) if w not in STOP_WORDS}


def stemmer() -> Callable[[str], str]:
    """An English (Snowball) stemmer if PyStemmer is installed, else no stemming."""
    try:
        import Stemmer
    except ImportError:
        return lambda word: word
    stem: Callable[[str], str] = Stemmer.Stemmer("english").stemWord
    return stem


def overlap(questions: list[Question]) -> dict:
    """How many of each question's content words its passage also holds, in total."""
    stem = stemmer()
    rows = []
    for q in questions:
        if q.text.lower() == q.passage.lower():
            raise AssertionError(f"a question copies its passage: {q.text!r}")
        asked, holds = content_words(q.text), content_words(q.passage)
        subject = content_words(q.subject)
        stems_held = {stem(w) for w in holds}
        shared = {w for w in asked if stem(w) in stems_held}
        rows.append((len(asked), len(asked & holds), len(shared), len(shared - subject)))
    n = max(1, len(rows))
    words = sum(r[0] for r in rows)
    return {
        "questions": len(rows),
        "question_words": words,
        "shared_exact": sum(r[1] for r in rows),
        "shared_stemmed": sum(r[2] for r in rows),
        "shared_stemmed_not_subject": sum(r[3] for r in rows),
        "share_exact": sum(r[1] for r in rows) / max(1, words),
        "share_stemmed": sum(r[2] for r in rows) / max(1, words),
        "questions_sharing_only_subject": sum(1 for r in rows if r[3] == 0) / n,
        "mean_words_per_question": words / n,
    }


def _template_words() -> set[str]:
    texts: list[str] = list(FILLER)
    for shape, facts in KINDS.values():
        texts.append(shape)
        for passage, asked in facts:
            texts += [passage, *asked]
    for values in (*CHOICES.values(), NOUNS, ADJECTIVES, VERBS, PREPOSITIONS):
        texts += values
    return {w.lower() for text in texts for w in WORD.findall(text)} | set(STOP_WORDS)
