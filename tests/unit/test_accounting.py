from audience_relay.pipeline.accounting import MemberStat, SegmentStat, destination_accounting


def test_every_row_is_counted_once_in_order_of_precedence():
    segments = [
        SegmentStat("email", "s1", "invalid_email", 3),
        SegmentStat("maid", "s1", None, 4),  # type not accepted
        SegmentStat("email", "s9", None, 5),  # unmapped segment
        SegmentStat("email", "s1", None, 10),  # mapped: members or consent-filtered
    ]
    members = [
        MemberStat("d", "a", "add", 4, 5),
        MemberStat("d", "a", "unchanged", 2, 3),
        MemberStat("d", "a", "remove", 7, 0),
    ]
    result = destination_accounting(("email",), {"s1"}, segments, members, consent_filtered=2)
    assert result["rows"] == {"to_deliver": 5, "unchanged": 3, "pending": 0, "consent_filtered": 2, "unmapped": 5, "rejected": 7}
    assert result["rejected_by_reason"] == {"id_type_not_accepted": 4, "invalid_email": 3}
    assert result["members"] == {"add": 4, "remove": 7, "unchanged": 2}
    assert result["reconciles"] and result["input_rows"] == 22


def test_more_member_rows_than_mapped_rows_does_not_reconcile():
    segments = [SegmentStat("email", "s1", None, 1)]
    members = [MemberStat("d", "a", "add", 1, 2)]
    assert not destination_accounting(("email",), {"s1"}, segments, members, consent_filtered=0)["reconciles"]


def test_rows_missing_between_mapping_and_members_do_not_reconcile():
    segments = [SegmentStat("email", "s1", None, 10)]
    members = [MemberStat("d", "a", "add", 6, 7)]   # 7 member rows + 2 consent-filtered: one row lost
    result = destination_accounting(("email",), {"s1"}, segments, members, consent_filtered=2)
    assert not result["reconciles"] and result["rows"]["consent_filtered"] == 2
