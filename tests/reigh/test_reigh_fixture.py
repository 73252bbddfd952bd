"""The fixture behaves as Reigh's database does (before any migration of ours)."""

from tests.reigh.reigh_checks import check_reigh_behaviour


def test_reigh_fixture_behaves_as_reigh(reigh_url: str) -> None:
    check_reigh_behaviour(reigh_url)
