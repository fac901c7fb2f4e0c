"""Every destination this build delivers to, by profile name: one line per destination folder."""
from __future__ import annotations

from audience_relay.connectors.destinations import google, linkedin, meta, pinterest, s3, sftp, snapchat, tiktok, x
from audience_relay.connectors.destinations.shape import DestinationType
from audience_relay.connectors.profiles import Profile

REGISTRY: dict[str, DestinationType] = {
    "meta_custom_audiences": meta.DESTINATION,
    "google_data_manager": google.DESTINATION,
    "sftp_gzip_csv": sftp.DESTINATION,
    "s3_objects": s3.DESTINATION,
    "tiktok_audiences": tiktok.DESTINATION,
    "snapchat_audience_match": snapchat.DESTINATION,
    "linkedin_dmp_segments": linkedin.DESTINATION,
    "x_custom_audiences": x.DESTINATION,
    "pinterest_customer_lists": pinterest.DESTINATION,
}
PROFILES: dict[str, Profile] = {name: destination.profile for name, destination in REGISTRY.items()}
