"""Language ID: accuracy on the mini-pile's UDHR and Genesis translations, and the `language` stage's throughput
against raw fastText `predict` on the same texts, in one run.

Accuracy: each UDHR/Genesis document's `meta.language` is mapped to the code lid.176 uses (ISO 639-1 where the
language has one, else ISO 639-3, e.g. `ceb`, `ilo`); documents whose language lid.176 does not know are left out.
Throughput: both sides see all mini-pile documents in one process on one core; ours is `LanguageID.process_batch`
over `Doc` objects (newline replacement, prediction, annotations, accounting), raw is the fasttext module's own
`predict` on a list of newline-free strings (single strings where the installed backend is fasttext-predict, whose
list path is broken). `--repeat` rounds, each timing both sides back to back in CPU seconds of this process (other
work on a shared machine then skews neither side): the best of each side and the median of the per-round ratios
are printed.

    .venv/bin/python benchmarks/langid.py [--repeat N] [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tokenmill.curate.filters.language import LanguageID, bundled_model_path
from tokenmill.curate.readers import PileReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MB = 1_000_000

# `meta.language` of UDHR / Genesis documents -> lid.176 code. Names absent here are languages lid.176 does not
# cover (Abkhaz, Hausa, Zulu, Quechuan varieties aside, most of the Niger-Congo and Amerindian texts) or, for
# Genesis's `lolcat`, no language at all.
GOLD = {
    "Afrikaans": "af",
    "Albanian_Shqip": "sq",
    "Arabic_Alarabia": "ar",
    "Asturian_Bable": "ast",
    "Basque_Euskara": "eu",
    "Belorus_Belaruski": "be",
    "Bengali": "bn",
    "Bikol_Bicolano": "bcl",
    "Bosnian_Bosanski": "bs",
    "Breton": "br",
    "Bulgarian_Balgarski": "bg",
    "Catalan": "ca",
    "Catalan_Catala": "ca",
    "Cebuano": "ceb",
    "Corsican": "co",
    "Croatian_Hrvatski": "hr",
    "Czech": "cs",
    "Czech_Cesky": "cs",
    "Danish_Dansk": "da",
    "Dutch_Nederlands": "nl",
    "English": "en",
    "Esperanto": "eo",
    "Estonian_Eesti": "et",
    "Farsi_Persian": "fa",
    "Farsi_Persian-v2": "fa",
    "Filipino_Tagalog": "tl",
    "Finnish_Suomi": "fi",
    "French_Francais": "fr",
    "Frisian": "fy",
    "Galician_Galego": "gl",
    "German_Deutsch": "de",
    "Greek_Ellinika": "el",
    "Guarani": "gn",
    "HaitianCreole_Kreyol": "ht",
    "HaitianCreole_Popular": "ht",
    "Hebrew_Ivrit": "he",
    "Hindi": "hi",
    "Hindi_web": "hi",
    "Hrvatski_Croatian": "hr",
    "Hungarian_Magyar": "hu",
    "Icelandic_Yslenska": "is",
    "Ido": "io",
    "Iloko_Ilocano": "ilo",
    "Indonesian": "id",
    "Interlingua": "ia",
    "IrishGaelic_Gaeilge": "ga",
    "Italian": "it",
    "Italian_Italiano": "it",
    "Japanese_Nihongo": "ja",
    "Javanese": "jv",
    "Kannada": "kn",
    "Kapampangan": "pam",
    "Kazakh": "kk",
    "Korean_Hankuko": "ko",
    "Kurdish": "ku",
    "Latin_Latina": "la",
    "Latin_Latina-v2": "la",
    "Latvian": "lv",
    "Luxembourgish_Letzebuergeusch": "lb",
    "Macedonian": "mk",
    "Malagasy": "mg",
    "Malay_BahasaMelayu": "ms",
    "Maltese": "mt",
    "Minangkabau": "min",
    "Mongolian_Khalkha": "mn",
    "Nahuatl": "nah",
    "Nepali": "ne",
    "Norwegian": "no",
    "Norwegian_Norsk-Bokmal": "no",
    "Norwegian_Norsk-Nynorsk": "nn",
    "OccitanAuvergnat": "oc",
    "OccitanLanguedocien": "oc",
    "Osetin_Ossetian": "os",
    "Polish": "pl",
    "Polish_Polski": "pl",
    "Portuguese_Portugues": "pt",
    "Punjabi_Panjabi": "pa",
    "Quechua": "qu",
    "Quichua": "qu",
    "Rhaeto-Romance_Rumantsch": "rm",
    "Romanian": "ro",
    "Romanian_Romana": "ro",
    "Russian": "ru",
    "Russian_Russky": "ru",
    "Sanskrit": "sa",
    "Sardinian": "sc",
    "ScottishGaelic_GaidhligAlbanach": "gd",
    "Serbian_Srpski": "sr",
    "Sinhala": "si",
    "Slovak": "sk",
    "Slovak_Slovencina": "sk",
    "Slovenian_Slovenscina": "sl",
    "Somali": "so",
    "Sorbian": "hsb",  # the text is Upper Sorbian
    "Spanish": "es",
    "Spanish_Espanol": "es",
    "Sundanese": "su",
    "Swaheli": "sw",
    "Swahili_Kiswahili": "sw",
    "Swedish_Svenska": "sv",
    "Turkish_Turkce": "tr",
    "Uighur_Uyghur": "ug",
    "Ukrainian": "uk",
    "Uzbek": "uz",
    "Vietnamese": "vi",
    "Vietnamese-ALRN": "vi",
    "Walloon_Wallon": "wa",
    "Waray": "war",
    "Welsh_Cymraeg": "cy",
    "Yoruba": "yo",
    "english-kjv": "en",
    "english-web": "en",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "portuguese": "pt",
    "swedish": "sv",
}
# Macrolanguage labels that are right too: lid.176 has `sh` (Serbo-Croatian) beside hr/bs/sr, and `pnb`
# (Western Punjabi, Shahmukhi script, which is how this UDHR Punjabi text is written) beside `pa`.
ALSO_RIGHT = {"hr": {"sh"}, "bs": {"sh"}, "sr": {"sh"}, "pa": {"pnb"}}
# Large web languages (the top of Common Crawl's language distribution) reported one by one.
TOP_LANGUAGES = ("en", "ru", "de", "ja", "es", "fr", "it", "pt", "nl", "pl", "vi", "tr", "cs", "fa", "ko", "sv")


def read_pile(data: Path) -> list[Doc]:
    """Every mini-pile document, through tokenmill's own Pile reader."""
    reader = PileReader(paths=str(data / "pile" / "*.jsonl.zst"))
    out = Outcomes(StageStats("read"))
    return [doc for shard in reader.shards() for doc in reader.read(shard, out)]


def labelled(docs: list[Doc]) -> list[tuple[Doc, str]]:
    """UDHR and Genesis documents with their gold lid.176 code (languages lid.176 knows only)."""
    pairs = []
    for doc in docs:
        if doc.source in ("pile/UDHR", "pile/Genesis") and doc.meta.get("language") in GOLD:
            pairs.append((doc, GOLD[doc.meta["language"]]))
    return pairs


def is_right(predicted: str | None, gold: str) -> bool:
    return predicted == gold or predicted in ALSO_RIGHT.get(gold, ())


def accuracy(stage: LanguageID, pairs: list[tuple[Doc, str]]) -> tuple[float, dict[str, tuple[int, int]]]:
    """Top-1 accuracy over `pairs`, and (right, total) per gold language."""
    per_language: dict[str, list[int]] = {}
    for doc, gold in pairs:
        stage.process(doc)
        counts = per_language.setdefault(gold, [0, 0])
        counts[0] += is_right(doc.annotations["language"], gold)
        counts[1] += 1
    right = sum(r for r, _ in per_language.values())
    return right / len(pairs), {code: (r, n) for code, (r, n) in per_language.items()}


def raw_predictor(path: str) -> Callable[[list[str]], object]:
    """The fasttext module's own `predict`, the way a user would call it on a batch."""
    import fasttext

    model = fasttext.load_model(path)
    if hasattr(fasttext, "train_supervised"):  # official fasttext: the list path works under NumPy 2
        return lambda texts: model.predict([t.replace("\n", " ") for t in texts])
    return lambda texts: [model.predict(t.replace("\n", " ")) for t in texts]


def throughput(docs: list[Doc], repeat: int) -> tuple[float, float, float]:
    """Best seconds for ours and for raw fastText over all `docs`, and the median of the per-round ratios (each
    round times both back to back, so a busy machine slows both sides of a ratio alike)."""
    stage = LanguageID(keep=None)
    stage.setup()
    raw = raw_predictor(str(bundled_model_path()))
    texts = [doc.text for doc in docs]

    def run_ours() -> None:
        out = Outcomes(StageStats("language"))
        stage.process_batch(docs, out)
        assert out.stats.kept == len(docs)

    sides = {"ours": run_ours, "raw": lambda: raw(texts)}
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for round_ in range(repeat):
        for side in ("ours", "raw") if round_ % 2 == 0 else ("raw", "ours"):  # alternate which side runs first
            tick = time.process_time()
            sides[side]()
            times[side].append(time.process_time() - tick)
    ours_times, raw_times = times["ours"], times["raw"]
    ratio = statistics.median(r / o for o, r in zip(ours_times, raw_times))
    return min(ours_times), min(raw_times), ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    docs = read_pile(args.data)
    pairs = labelled(docs)
    overall, per_language = accuracy(LanguageID(keep=None), pairs)
    sources = Counter(doc.source for doc, _ in pairs)
    print(f"accuracy, lid.176.ftz, top-1, {len(pairs)} documents ({dict(sources)}) in {len(per_language)} languages")
    print(f"  overall: {overall:.1%}")
    top = [(code, *per_language[code]) for code in TOP_LANGUAGES if code in per_language]
    top_right, top_total = sum(r for _, r, _ in top), sum(n for _, _, n in top)
    print(f"  top web languages ({len(top)}): {top_right}/{top_total} = {top_right / top_total:.1%}")
    print("  " + "  ".join(f"{code} {r}/{n}" for code, r, n in top))
    wrong = sorted(code for code, (r, n) in per_language.items() if r < n)
    print(f"  languages with misses: {' '.join(wrong)}")

    fresh = [Doc(id=d.id, text=d.text, source=d.source) for d in docs]
    ours, raw, ratio = throughput(fresh, args.repeat)
    megabytes = sum(d.nbytes for d in fresh) / MB
    print(f"\nthroughput, {len(fresh)} mini-pile documents, {megabytes:.1f} MB, best of {args.repeat}, one core")
    print(f"{'':24}{'docs/s':>10}{'MB/s':>8}")
    for name, seconds in (("tokenmill language", ours), ("raw fastText predict", raw)):
        print(f"{name:24}{len(fresh) / seconds:>10,.0f}{megabytes / seconds:>8.2f}")
    print(f"ratio tokenmill / raw: {ratio:.2f} median of paired rounds, {raw / ours:.2f} best vs best (target >= 0.90)")


if __name__ == "__main__":
    main()
