"""The scheduling decision's table of cases, shared by the pure tests (tests/unit/test_scheduling.py, on plain
data) and the store contract (through each backend's claim): one table, so both stores are held to exactly
the rules the pure function is."""

from __future__ import annotations

from dataclasses import dataclass

from fluxserve.core.jobs import GenerationSpec, Priority
from fluxserve.store.scheduling import ClaimPolicy, batch_key
from tests.support.specs import make_spec


@dataclass(frozen=True)
class Queued:
    """One queued job of a case, named so the expected claim reads as names."""

    name: str
    key: str | None = None
    width: int = 64  # jobs of different widths never share a batch
    level: str = "regular"  # "none": the bit-exact level, never batched
    redux: bool = False  # its image_url is fetched first
    priority: Priority = Priority.NORMAL  # fal's x-fal-queue-priority; the plan sees scheduling.RANK of it

    @property
    def spec(self) -> GenerationSpec:
        extra = {"kind": "redux", "image_url": "http://img.example/a.png"} if self.redux else {}
        return make_spec(prompt=self.name, width=self.width, acceleration=self.level, **extra)


@dataclass(frozen=True)
class Served:
    """A job of `key` claimed before the case (one each, in order, a second apart); still running unless
    done."""

    key: str | None
    done: bool = True


@dataclass(frozen=True)
class Case:
    id: str
    queue: tuple[Queued, ...]
    expected: tuple[str, ...]
    max_batch: int = 4
    max_running_per_key: int = 0
    max_fetches: int | None = None
    history: tuple[Served, ...] = ()
    # Fill up a batch of this width's jobs (a worker's follow-up claim within its batch window).
    fill_width: int | None = None

    @property
    def policy(self) -> ClaimPolicy:
        fill = None if self.fill_width is None else batch_key(make_spec(width=self.fill_width, acceleration="regular"))
        return ClaimPolicy(self.max_batch, self.max_running_per_key, self.max_fetches, fill)


def jobs(*names: str, **common) -> tuple[Queued, ...]:
    return tuple(Queued(name, **common) for name in names)


CASES = [
    Case("one key alone is FIFO", jobs("a1", "a2", "a3", key="A", level="none"), ("a1",)),
    Case("the bit-exact level runs alone", jobs("n1", "n2", level="none"), ("n1",)),
    Case("a batch job never joins a bit-exact head", (Queued("n1", level="none"), *jobs("r1", "r2")), ("n1",)),
    Case("a batch takes the oldest compatible jobs",
         (Queued("h"), Queued("wide", width=128), *jobs("s1", "s2", "s3")), ("h", "s1", "s2"), max_batch=3),
    Case("a batch is at most max_batch", jobs("j1", "j2", "j3", "j4", "j5"), ("j1", "j2", "j3", "j4")),
    Case("max_batch 1 claims one job", jobs("j1", "j2"), ("j1",), max_batch=1),
    Case("an empty queue claims nothing", (), ()),
    Case("never-served keys go in order of their oldest job",
         (*jobs("a1", "a2", key="A", level="none"), Queued("b1", key="B", level="none")), ("a1",)),
    Case("the key served least recently goes first",
         (*jobs("a1", "a2", key="A", level="none"), Queued("b1", key="B", level="none")), ("b1",),
         history=(Served("B"), Served("A"))),
    Case("a key never served goes before one served",
         (*jobs("a1", "a2", key="A", level="none"), Queued("b1", key="B", level="none")), ("b1",),
         history=(Served("A"),)),
    Case("batch-mates are shared out fairly across keys",
         (*jobs("a1", "a2", "a3", key="A"), Queued("b1", key="B")), ("a1", "b1"), max_batch=2),
    Case("the per-key limit holds for batch-mates (another key's job does not wait)",
         (*jobs("a1", "a2", "a3", "a4", key="A"), Queued("b1", key="B", width=128)), ("a1",),
         max_running_per_key=1),
    Case("the per-key limit holds for batch-mates (a compatible job of another key joins)",
         (*jobs("a1", "a2", "a3", "a4", key="A"), Queued("b1", key="B")), ("a1", "b1"), max_running_per_key=1),
    Case("the per-key limit counts jobs already running",
         (*jobs("a1", "a2", key="A"), Queued("b1", key="B")), ("b1", "a1"), max_running_per_key=2,
         history=(Served("A", done=False),)),
    Case("a key at its limit waits", (Queued("a1", key="A", level="none"), Queued("b1", key="B", level="none")),
         ("b1",), max_running_per_key=1, history=(Served("A", done=False),)),
    Case("every key at its limit: nothing is claimed", jobs("a1", key="A"), (), max_running_per_key=1,
         history=(Served("A", done=False),)),
    Case("jobs without a key have no limit", jobs("n1", "n2"), ("n1", "n2"), max_running_per_key=1,
         history=(Served(None, done=False),)),
    Case("filling a batch takes only its batch key", (Queued("wide", width=128), *jobs("s1", "s2")),
         ("s1", "s2"), fill_width=64),
    Case("filling a batch takes no bit-exact job", (Queued("n1", level="none"), Queued("s1")), ("s1",),
         fill_width=64),
    Case("a batch holds no more jobs needing a fetch than max_fetches", jobs("r1", "r2", "r3", redux=True),
         ("r1", "r2"), max_fetches=2),
    Case("higher priority first",
         (Queued("low", level="none", priority=Priority.LOW), Queued("normal", level="none")), ("normal",)),
    Case("priority before fairness in a batch",
         (Queued("a1", key="A", priority=Priority.LOW), Queued("b1", key="B", priority=Priority.LOW),
          Queued("a2", key="A")), ("a2", "b1"), max_batch=2),
    Case("a low job fills a batch no normal one can",
         (Queued("low", priority=Priority.LOW), Queued("n1"), Queued("wide", width=128)), ("n1", "low")),
    Case("low jobs among themselves are FIFO",
         (*jobs("l1", "l2", level="none", priority=Priority.LOW),), ("l1",)),
]
