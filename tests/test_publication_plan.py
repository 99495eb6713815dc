"""`ingest.pipeline.publication_plan`: how a run that wrote files publishes its versions, as a pure
function of its situation (the ingest tests run each plan for real)."""

from __future__ import annotations

import itertools

import pytest

from ingest.pipeline import PublicationPlan, publication_plan


@pytest.mark.parametrize(
    ("situation", "plan"),
    [
        # A first ingest: searchable now, the graph a moment later, then dense checkpoints.
        (
            dict(pending=True, dense=True, rechunk=False, new_graphs=True),
            PublicationPlan("checkpoint", "own_checkpoint"),
        ),
        # Every vector known (an update whose texts are all in the cache): the graph's version is the last.
        (
            dict(pending=False, dense=True, rechunk=False, new_graphs=True),
            PublicationPlan("checkpoint", "own_commit"),
        ),
        # Nothing the graph understands, nothing to embed: one commit.
        (
            dict(pending=False, dense=True, rechunk=False, new_graphs=False),
            PublicationPlan("commit", "with_searchable"),
        ),
        # `ingest --no-wait`: the searchable version ends the run; `finish_embedding` does graph and vectors.
        (dict(pending=True, dense=False, rechunk=False, new_graphs=True), PublicationPlan("commit", "later")),
        (
            dict(pending=False, dense=False, rechunk=False, new_graphs=True),
            PublicationPlan("checkpoint", "own_commit"),
        ),
        # An upgrade's re-chunk with texts to embed: the live version serves until one complete commit.
        (
            dict(pending=True, dense=True, rechunk=True, new_graphs=True),
            PublicationPlan("live", "with_searchable", hold=True),
        ),
        # ... with every vector known, it is an ordinary update.
        (
            dict(pending=False, dense=True, rechunk=True, new_graphs=True),
            PublicationPlan("checkpoint", "own_commit"),
        ),
        # ... and with --no-wait it cannot hold.
        (dict(pending=True, dense=False, rechunk=True, new_graphs=True), PublicationPlan("commit", "later")),
        # An upgrade's update publishes its changes before its held re-chunk: they never end the build.
        (
            dict(pending=True, dense=True, rechunk=False, new_graphs=True, more_follows=True),
            PublicationPlan("checkpoint", "own_checkpoint", final=False),
        ),
        (
            dict(pending=False, dense=True, rechunk=False, new_graphs=False, more_follows=True),
            PublicationPlan("checkpoint", "with_searchable", final=False),
        ),
    ],
)
def test_each_situation_gets_its_plan(situation: dict[str, bool], plan: PublicationPlan) -> None:
    assert publication_plan(**situation) == plan


def test_every_plan_keeps_the_publication_rules() -> None:
    for pending, dense, rechunk, new_graphs, more_follows in itertools.product([False, True], repeat=5):
        plan = publication_plan(
            pending=pending, dense=dense, rechunk=rechunk, new_graphs=new_graphs, more_follows=more_follows
        )
        situation = (pending, dense, rechunk, new_graphs, more_follows)
        # Only a re-chunk with texts this run embeds holds; it publishes no searchable version.
        assert plan.hold == (pending and dense and rechunk) == (plan.searchable == "live"), situation
        # Only `--no-wait` with chunks left leaves the graph to `finish_embedding`.
        assert (plan.graph == "later") == (pending and not dense), situation
        # The last version is a commit only when nothing follows it in this build.
        if plan.searchable == "commit":
            assert plan.graph in ("with_searchable", "later") and not more_follows, situation
        if plan.graph == "own_commit":
            assert not pending and not more_follows, situation
        # Changes published before a held re-chunk never end the build.
        assert plan.final == (not more_follows), situation
