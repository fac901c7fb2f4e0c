"""The feedback table: every expected audience, the API's match rate where it has one, flags only with a threshold and a report."""
from chispa import assert_df_equality

from audience_relay.pipeline.feedback import EXPECTED, REPORTED, feedback_table


def test_rates_come_from_the_api_or_from_size_over_sent_and_flags_need_a_threshold_and_a_report(spark):
    expected = spark.createDataFrame([
        ("meta", "a", 100, 0.5),     # Meta: no rate, 40 of 100 reported -> 0.4, under 0.5
        ("meta", "b", 100, None),    # no threshold: never flagged
        ("meta", "c", 0, 0.5),       # nothing sent: no rate to judge
        ("google", "d", 200, 0.9),   # the API's own rate wins over size / sent
        ("google", "e", 50, 0.9),    # not reported at all
    ], EXPECTED)
    reported = spark.createDataFrame([
        ("meta", "a", "111", 40, None, "Normal", "t"),
        ("meta", "b", "222", 10, None, "Normal", "t"),
        ("meta", "c", "333", 5, None, "Normal", "t"),
        ("google", "d", "444", 190, 0.93, "ENABLED", "t"),
        ("meta", "zz", "999", 7, None, "Normal", "t"),   # reported but not expected by this run: left out
    ], REPORTED)
    got = feedback_table(reported, expected, "r1").select("destination_id", "audience_id", "ids_sent", "reported_size", "match_rate",
                                                          "below_threshold")
    want = spark.createDataFrame([
        ("meta", "a", 100, 40, 0.4, True),
        ("meta", "b", 100, 10, 0.1, None),
        ("meta", "c", 0, 5, None, None),
        ("google", "d", 200, 190, 0.93, False),
        ("google", "e", 50, None, None, None),
    ], "destination_id string, audience_id string, ids_sent long, reported_size long, match_rate double, below_threshold boolean")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
