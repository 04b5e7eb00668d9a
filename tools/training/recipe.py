"""Training recipes: one dataclass, named presets, and the overrides a command line may apply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from streamer.config import FeatureConfig, GateConfig
from tools.datasets import LABELS

__all__ = ["Recipe", "PRESETS", "recipe", "cached_versions", "GATE", "DEFAULT_BLOCKS", "RecipeError", "split_weight"]

DEFAULT_BLOCKS = ((64, 5), (96, 5), (96, 3), (128, 3))  # Conv1D (filters, kernel) of the CNN

# RAVDESS is recorded quietly: 5 % of its clips peak below -45 dBFS (frame power) and 1 % below
# -50, so the streamer's default absolute floor (-50 dBFS) left 7.6 % of the clips without a single
# speech window ("no speech found"). -65 dBFS leaves 2 of 2400 (clean + telephone); the relative
# floor (35 dB under the decaying peak) still keeps pauses out in a stream with speech.
GATE = GateConfig(abs_db=-65.0, rel_db=35.0, peak_decay_db_per_s=1.0, min_fraction=0.2)


class RecipeError(ValueError):
    """An unknown preset or an impossible combination of options."""


def split_weight(entry: str) -> tuple[str, float | None]:
    """``"key=w"`` -> (key, w); w is None unless it is a number >= 0 (the caller names what was wrong)."""
    key, _, w = str(entry).partition("=")
    try:
        weight = float(w)
    except ValueError:
        return key, None
    return key, weight if weight >= 0.0 else None


def cached_versions(train_versions: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The copies to cache: clean and telephone first (the CV's test sets), then the training draws."""
    return tuple(dict.fromkeys(["clean", "tel"] + list(train_versions)))


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model, with the defaults of the CNN recipes.

    ``versions`` is derived from ``train_versions`` (the cached copies: the clean and telephone test
    copies first). ``corpora`` are the corpora the final fit trains on.
    """

    name: str
    features: FeatureConfig
    train_versions: tuple[str, ...] = ("clean",)
    norm: str = "running"  # running | running_mean | fixed | none
    prior_frames: float = 100.0
    # prior weight of the spectral-shape bands (MFCC c1 and up), where a microphone, a room or a corpus
    # leaves its offset; None: ``prior_frames`` for every band
    prior_frames_shape: float | None = None
    arch: str = "cnn"  # cnn | seed
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS
    dense: int = 64
    pool: str = "avgmax"  # avgmax | attention
    views: tuple[str, ...] = ("all",)
    optimizer: str = "adam"  # adam (cosine-decayed) | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch: int = 32
    epochs: int = 130
    early_stopping: bool = False
    patience: int = 12
    spec_mask: bool = True
    mask_t: int = 15
    mask_c: int = 8
    mask_domain: str = "coefficients"  # coefficients | mel
    label_smoothing: float = 0.0
    mixup: float = 0.0
    swa: float = 0.0
    context: float = 0.0
    straddle: float = 0.0  # share of training windows cut from two utterances of one speaker with a pause between
    # labels a clip's loss leaves out where its corpus lacks them and another training corpus has them
    # ("all", or label names; EmoDB has no calm or surprised: its clips then do not teach the network
    # that a voice like theirs is never calm or surprised); empty: every clip's loss over every label
    corpus_labels: tuple[str, ...] = ()
    # the weight those labels keep in such a clip's loss (0: left out; 0 < w < 1: a softer "not calm",
    # the label's logit lowered by log(1/w) in that clip's loss only)
    corpus_label_weight: float = 0.0
    # none | corpus | a corpus's name: each clip's loss weighted so that within its corpus (corpus:
    # every corpus; a name: that corpus only) every label it has weighs the same (EmoDB has 127 angry
    # clips and 71 happy ones; a balanced set is what "no label above 35 %" is measured on)
    class_weight: str = "none"
    # how far: each balancing weight raised to this power (1: fully balanced; 0.5: half-way in log terms)
    class_weight_power: float = 1.0
    # "corpus:label=w": that corpus's clips of that label weigh w in the loss (times any class weight), e.g.
    # "emodb:sad=0.3" where one corpus's label sounds unlike another's (EmoDB's quiet sad, RAVDESS's tearful one)
    label_weights: tuple[str, ...] = ()
    # one | corpus: one softmax layer per training corpus on a shared trunk, each clip's loss on its own
    # corpus's layer (EmoDB's quiet sad and RAVDESS's tearful one are then not one output's target)
    heads: str = "one"
    # the shipped network's probabilities with ``heads="corpus"``: the heads' mixed with these weights
    # ("corpus=w"; corpora not named weigh 0); empty: every training corpus's head alike
    head_weights: tuple[str, ...] = ()
    # "corpus:label" (or "corpus:all"): that corpus's clips of that label train an output of their own,
    # added to the label's at the end (EmoDB's quiet sad and RAVDESS's tearful one as two outputs of
    # one softmax, so neither's voice has to look like the other's to be sad)
    split_labels: tuple[str, ...] = ()
    # a second prior for telephone-band sources (8 kHz or less), from the telephone copies' frames:
    # none | model (the model carries it; training as before) | train (training's telephone copies
    # start from it too)
    narrowband_prior: str = "none"
    # none | speaker | speaker_all | corpus: an adversary on the network's last hidden layer learns to tell
    # the training clips' speakers apart (speaker: within each corpus; speaker_all: among all, which also
    # tells the corpora apart), or the corpora, and its gradient reaches the trunk reversed
    # (domain-adversarial training), so what the trunk learns is pushed away from who is speaking (or
    # which corpus) towards what is shared; the adversary is not part of the shipped network
    adversary: str = "none"
    # the reversed gradient's scale (reached by a ramp over the first epochs, as in DANN)
    adversary_weight: float = 0.1
    # the corpora whose clips the adversary learns from (empty: all): a speaker adversary is safe where each
    # speaker voices every label alike (RAVDESS), and removes emotion where speakers' label mixes differ (EmoDB)
    adversary_corpora: tuple[str, ...] = ()
    std_pool: bool = False
    seeds: int = 1
    input_layout: str = "steps"  # steps | coefficients
    gate: GateConfig = field(default=GATE)
    corpora: tuple[str, ...] = ("ravdess",)

    @property
    def versions(self) -> tuple[str, ...]:
        """The augmented copies the feature cache holds."""
        return cached_versions(self.train_versions)

    def with_(self, **over: Any) -> "Recipe":
        """A copy with overrides; ``None`` values are ignored; feature fields go into ``features``."""
        over = {k: v for k, v in over.items() if v is not None}
        feat = {k: over.pop(k) for k in list(over) if k in {f.name for f in fields(FeatureConfig)}}
        unknown = set(over) - {f.name for f in fields(Recipe)}
        if unknown:
            raise RecipeError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        for k in ("train_versions", "views", "corpora", "corpus_labels", "label_weights", "head_weights", "split_labels",
                  "adversary_corpora"):
            if k in over:
                over[k] = tuple(over[k])
        if "blocks" in over:
            over["blocks"] = tuple(tuple(b) for b in over["blocks"])
        r = replace(self, features=replace(self.features, **feat), **over)
        r.check()
        return r

    def check(self) -> None:
        """Reject combinations that cannot train."""
        if not set(self.views) <= {"all", "mfcc"}:
            raise RecipeError(f"views are all and mfcc, not {','.join(self.views)}")
        if self.features.pitch and (self.std_pool or self.mask_domain == "mel"):
            raise RecipeError("pitch channels work with per-channel spreads and coefficient masks only "
                              "(add --no-pitch)")
        if not set(self.corpora) <= {"ravdess", "emodb"}:
            raise RecipeError(f"corpora are ravdess and emodb, not {','.join(self.corpora)}")
        if not set(self.corpus_labels) <= set(LABELS) | {"all"}:
            raise RecipeError(f"corpus labels are all or of {','.join(LABELS)}, not {','.join(self.corpus_labels)}")
        if self.narrowband_prior not in ("none", "model", "train"):
            raise RecipeError(f"narrowband prior is none, model or train, not {self.narrowband_prior}")
        if self.narrowband_prior != "none" and self.norm not in ("running", "running_mean"):
            raise RecipeError("a narrowband prior needs a running normalisation (add --narrowband-prior none)")
        if self.class_weight not in ("none", "corpus", "ravdess", "emodb"):
            raise RecipeError(f"class weight is none, corpus or a corpus (ravdess, emodb), not {self.class_weight}")
        if not 0.0 <= self.corpus_label_weight < 1.0:
            raise RecipeError(f"corpus label weight is in [0, 1), not {self.corpus_label_weight}")
        if self.corpus_label_weight and not self.corpus_labels:
            raise RecipeError("a corpus label weight needs corpus labels (add --corpus-labels)")
        if not 0.0 < self.class_weight_power <= 1.0:
            raise RecipeError(f"class weight power is in (0, 1], not {self.class_weight_power}")
        self.label_weight_map()
        if self.heads not in ("one", "corpus"):
            raise RecipeError(f"heads is one or corpus, not {self.heads}")
        if self.heads == "corpus" and (self.arch == "seed" or self.mixup or self.corpus_labels):
            raise RecipeError("a head per corpus needs the CNN and works without mixup and corpus labels "
                              "(each head only sees its own corpus's labels)")
        if self.head_weights and self.heads != "corpus":
            raise RecipeError("head weights need a head per corpus (add --heads corpus)")
        self.head_weight_list(self.corpora)
        self.split_outputs()
        if self.split_labels and (self.heads != "one" or self.corpus_labels or self.arch == "seed"):
            raise RecipeError("split labels need the CNN with one head and no corpus labels")
        if self.adversary not in ("none", "speaker", "speaker_all", "corpus"):
            raise RecipeError(f"adversary is none, speaker, speaker_all or corpus, not {self.adversary}")
        if self.adversary != "none" and (self.arch == "seed" or self.heads != "one" or self.split_labels
                                         or self.mixup):
            raise RecipeError("an adversary needs the CNN with one head, no split labels and no mixup")
        if self.adversary_corpora and self.adversary != "speaker":
            raise RecipeError("adversary corpora need the speaker adversary (--adversary speaker)")
        if set(self.adversary_corpora) - {"ravdess", "emodb"}:
            raise RecipeError(f"adversary corpora are of ravdess, emodb, not {','.join(self.adversary_corpora)}")
        if not self.adversary_weight > 0.0:
            raise RecipeError(f"adversary weight is above 0, not {self.adversary_weight}")
        if self.corpus_labels and self.label_smoothing:
            raise RecipeError("corpus labels do not combine with label smoothing")

    def label_weight_map(self) -> dict[tuple[str, str], float]:
        """``label_weights`` as {(corpus, label): weight}.

        Raises:
            RecipeError: an entry that is not ``corpus:label=w`` with a known corpus and label and w >= 0.
        """
        out: dict[tuple[str, str], float] = {}
        for entry in self.label_weights:
            head, weight = split_weight(entry)
            corpus, _, label = head.partition(":")
            if corpus not in ("ravdess", "emodb") or label not in LABELS or weight is None:
                raise RecipeError(f"a label weight is corpus:label=w (corpus ravdess or emodb, a label of "
                                  f"{','.join(LABELS)}, w >= 0), not {entry!r}")
            out[(corpus, label)] = weight
        return out

    def split_outputs(self) -> list[tuple[str, int]]:
        """(corpus, label index) of each extra output ``split_labels`` asks for, in order.

        Raises:
            RecipeError: an entry that is not ``corpus:label`` (or ``corpus:all``) with a corpus of
                ravdess, emodb and a known label, or one asked twice.
        """
        out: list[tuple[str, int]] = []
        for entry in self.split_labels:
            corpus, _, label = str(entry).partition(":")
            if corpus not in ("ravdess", "emodb") or label not in set(LABELS) | {"all"}:
                raise RecipeError(f"a split label is corpus:label or corpus:all (corpus ravdess or emodb, a label "
                                  f"of {','.join(LABELS)}), not {entry!r}")
            for k in range(len(LABELS)) if label == "all" else [LABELS.index(label)]:
                if (corpus, k) in out:
                    raise RecipeError(f"split label {corpus}:{LABELS[k]} is asked twice")
                out.append((corpus, k))
        return out

    def head_weight_list(self, corpora: list[str] | tuple[str, ...]) -> list[float]:
        """The mixing weight of each of ``corpora``'s heads (in that order), summing to 1.

        Raises:
            RecipeError: an entry that is not ``corpus=w`` (w >= 0) with a corpus of the recipe, or weights
                that leave every one of ``corpora`` at 0.
        """
        if not self.head_weights:
            return [1.0 / len(corpora)] * len(corpora)
        given: dict[str, float] = {}
        for entry in self.head_weights:
            corpus, weight = split_weight(entry)
            if corpus not in self.corpora or weight is None:
                raise RecipeError(f"a head weight is corpus=w (corpus of {','.join(self.corpora)}, w >= 0), "
                                  f"not {entry!r}")
            given[corpus] = weight
        ws = [given.get(c, 0.0) for c in corpora]
        if sum(ws) <= 0:
            raise RecipeError(f"head weights {','.join(self.head_weights)} give none of {','.join(corpora)} a weight")
        return [w / sum(ws) for w in ws]

    def to_json(self) -> dict[str, Any]:
        """The recipe as JSON-ready values (what reports and model metadata record)."""
        d = asdict(self)
        d["versions"] = list(self.versions)
        return d


SEED = Recipe(
    name="seed",
    features=FeatureConfig(sample_rate=16000, n_fft=2048, hop_length=512, n_mels=128, n_mfcc=40,
                           sub_window_frames=94, window_s=3.0, hop_s=1.0),
    norm="fixed",
    train_versions=("clean",),
    arch="seed",
    optimizer="rmsprop",
    lr=5e-5,
    batch=16,
    epochs=400,  # at most; early stopping on held-out actors
    patience=60,
    early_stopping=True,
    spec_mask=False,
    input_layout="coefficients",
)

DEFAULT = Recipe(
    name="default",
    # 40 MFCCs of 64 mel bands per 20 ms frame, plus log-f0 and voicing strength: the MFCCs keep
    # the spectral envelope but not the voice's pitch, which carries much of the arousal (model card)
    features=FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=320, n_mels=64, n_mfcc=40,
                           sub_window_frames=1, window_s=3.0, hop_s=1.0, pitch=True),
    norm="running",
    # the level (c0) and the two pitch channels follow each stream after 10 speech frames, the
    # spectral shape (c1 and up) after 100; half the training windows come after 1-8 of the speaker's
    # other clips, as in a stream (model 1.6.0, issue 13). A corpus's recording level and its speakers'
    # voices no longer arrive as an offset one label absorbs: RAVDESS -> EmoDB largest label share 19 %
    # (8 kHz 23 %) against 43 % (63 %), macro-F1 0.342 against 0.277, for RAVDESS CV -0.5 per clip and
    # -2.3 on the timeline (one network per fold; model card)
    prior_frames=10.0,
    prior_frames_shape=100.0,
    context=0.5,
    # one version per clip per epoch, drawn from 16 fixed augmented copies of every clip: clean;
    # gain + white noise (x3 draws) or pink noise; 8 kHz mu-law telephone (clean, noisy, and
    # after speed/pitch x2); reverberation (x2); tape speed/pitch +-5-10 % (x3); lossy codec (MP3
    # 24/32 kb/s or Opus 12/16 kb/s, x2). Chosen by CV (model card): 16 copies against the first
    # 8 +2 points, and more epochs (130 against 70) +2 more once the copies are this varied.
    train_versions=("clean", "noisy", "noisy2", "tel", "tel_noisy", "reverb", "speed", "codec", "speed#2",
                    "speed#3", "reverb#2", "noisy#3", "tel_speed", "tel_speed#2", "pink", "codec#2"),
    blocks=DEFAULT_BLOCKS,
    # fixed; cosine-decayed learning rate; no early stopping. 170 epochs (after 2.3.0): 3-network CV
    # per clip 0.662 against 0.681 at the same seeds, timeline level (model card)
    epochs=130,
    # masks up to 30 frames (0.6 s) and 12 of the 40 coefficients: CV +0.8 points (16 kHz) and
    # +0.6 (8 kHz) over 15 and 8 at the same seeds (model card, round four)
    mask_t=30,
    mask_c=12,
    # 5 networks of ~130k parameters: CV +2 points over 3 of ~230k at the same size and speed
    seeds=5,
    # 30 % of training windows straddle two utterances of one speaker with a pause between, their
    # targets mixed by time (issue 13; model 1.5.0): over 5 folds, one network each, the timeline on
    # continuous speech +6.3 points (0.678 against 0.615; 0.684 with the 0.5 s pause reset), per
    # clip -0.9 (0.657 against 0.666: within noise)
    straddle=0.3,
    # RAVDESS actors 01-20 and EmoDB's 10 German speakers (model 2.0.0, issue 13): with the stream
    # normalisation above, the second corpus costs RAVDESS nothing (CV per clip 0.6525 against 0.6517,
    # timeline 0.654 against 0.661, one network per fold) where it cost 1.9 and 5.3 points before
    corpora=("ravdess", "emodb"),
    # not ``corpus_labels`` (EmoDB's clips' loss over its own six labels; issue 13, measured, not
    # shipped): 5-network RAVDESS CV per clip 0.6925 against 0.671 at the same seeds, but held-out
    # EmoDB speakers fall from 0.665 to 0.522 and 22 % of them are called calm or surprised (0.2 %):
    # without EmoDB's "not calm, not surprised", voices of a corpus without those labels get them
    corpus_labels=(),
    # EmoDB's labels balanced in the loss, RAVDESS's clips weighing alike (model 2.4.0, issue 13): EmoDB
    # has 127 angry clips and 71 happy, so angry was its commonest answer and held-out German speakers'
    # happy was heard as angry. 5-network RAVDESS CV: per clip 0.6625 against 0.680, after the speaker's
    # other clips 0.683 against 0.6825, timeline 0.691 / 0.686 against 0.692 / 0.689; held-out EmoDB
    # (3 networks a fold) 0.738 against 0.705, angry's balanced share 27.7 % against 34.9 % (8 kHz 27.7
    # against 35.7, over the 35 %). Not ``corpus`` (RAVDESS balanced too: its neutral, weighed
    # double, takes sad clips; 3-network RAVDESS per clip 0.658 against 0.681; model card)
    class_weight="emodb",
    # telephone copies start from their own prior, and so do sources at 8 kHz or less (model 2.3.0,
    # issue 13): the 8 kHz mu-law copy of a clip no longer starts 100 frames of wideband spectral
    # shape away from itself. 5-network RAVDESS CV at the same seeds: 8 kHz per clip 0.686 against
    # 0.640, 16 kHz 0.680 against 0.671, timeline 0.692 / 0.689 against 0.670 / 0.672; held-out EmoDB
    # 0.685 (8 kHz 0.687) against 0.665 (0.659). The prior at test time only ("model") lost 1.3 points
    # at 8 kHz: the networks must learn the telephone copies from it (model card, "Model 2.3.0")
    narrowband_prior="train",
)

#: named recipes; ``default`` is what ships (model 2.4.0's recipe). Issue 13's first candidate ``v2``
#: (more augmentation kinds, straddle 0.5, 80 epochs) lost to it on CV and is gone (model card)
PRESETS: dict[str, Recipe] = {"seed": SEED, "default": DEFAULT}


def recipe(name: str, **over: Any) -> Recipe:
    """A preset by name, with overrides (see :meth:`Recipe.with_`)."""
    if name not in PRESETS:
        raise RecipeError(f"unknown recipe {name!r} (one of {', '.join(PRESETS)})")
    return PRESETS[name].with_(**over)
