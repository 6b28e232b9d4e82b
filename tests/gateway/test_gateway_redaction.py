"""What a gateway hands its consumer from a workload's log (status errors, ``logs``, the followed stream
that reaches the consumer's task log) carries no storage grant: a presigned URL's query is a bearer
credential, so it is cut wherever a log line quotes one."""

from __future__ import annotations

from airflow_nevermined_fl import objectstore
from airflow_nevermined_fl.gateway.channel import data_grant
from airflow_nevermined_fl.gateway.executions import GRANT_QUERY


def test_presigned_queries_are_cut_from_log_lines() -> None:
    s3 = objectstore.client("http://127.0.0.1:8333", "us-east-1", "AKIDEXAMPLE", "secret-key-example")
    grant = data_grant(s3, "s3://bucket/provider-1/data.npz", 600)  # signed offline, like the gateway's
    signature = grant.split("X-Amz-Signature=")[1]
    lines = [
        f"GET {grant} failed: 503",
        f"event='Reading weights' url='{grant}' round=3",
        f'{{"url": "{grant}"}}',
    ]
    for line in lines:
        cut = GRANT_QUERY.sub("?[redacted]", line)
        assert signature not in cut and "X-Amz-Credential" not in cut and "AKIDEXAMPLE" not in cut
        assert "http://127.0.0.1:8333/bucket/provider-1/data.npz?[redacted]" in cut
    assert (
        GRANT_QUERY.sub("?[redacted]", "round 3 finished loss=0.5 ?why") == "round 3 finished loss=0.5 ?why"
    )
