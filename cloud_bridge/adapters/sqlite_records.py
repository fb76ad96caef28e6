"""Loyalty records in SQLite (WAL, synchronous=FULL): members, devices, campaigns, visits, offers.

Each event id is recorded once (PRIMARY KEY); a resent event is acknowledged again and changes nothing.
An offer's delivery to the shopper is itself durable: the offer row is its outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiosqlite
import msgspec

from cloud_bridge.adapters.data_key import DATA_KEY_ENV, DataKey
from cloud_bridge.adapters.sqlite_audience import refresh as refresh_audience
from cloud_bridge.adapters.sqlite_audience import update_members
from cloud_bridge.adapters.sqlite_redemptions import record_redemption
from cloud_bridge.core.admission import (
    CampaignFacts,
    ForgeryReason,
    MemberFacts,
    OfferFacts,
    ServedTerms,
    Visitor,
    check_offer,
    check_undelivered,
    check_visit_end_owner,
    offer_expires_at,
)
from cloud_bridge.core.campaign_caps import (
    CampaignCaps,
    CampaignRefusal,
    decided_while_active,
    local_day_bounds,
    over_campaign_cap,
)
from cloud_bridge.core.campaigns import (
    CHANGE_KINDS,
    CHANGE_SOURCES,
    STATUSES,
    ArchivedCampaign,
    Campaign,
    CampaignAction,
    CampaignChange,
    CampaignDefinition,
    CampaignExists,
    CampaignRevision,
    CampaignSchedule,
    CampaignStatus,
    ChangeKind,
    ChangeSource,
    CodeCounts,
    InvalidCampaign,
    StaleRevision,
    StoreFacts,
    UnknownCampaign,
    UnknownStore,
    changed,
    changed_fields,
    check_campaign,
    check_code,
    check_schedule,
    check_store_tags,
    gateway_shares,
    next_status,
    targeted_stores,
    time_zone,
    wire_schedule,
)
from cloud_bridge.core.clones import (
    ClonePolicy,
    GeoPoint,
    LocationError,
    Sighting,
    check_sighting,
    location_from,
)
from cloud_bridge.core.holdout import in_holdout
from cloud_bridge.core.keyseal import IdentityKeySealer, SealError
from cloud_bridge.core.preferences import (
    DEFAULT_INTERESTS,
    DEFAULT_PROMOTION_TYPES,
    TERM_KINDS,
    MemberPreferences,
    Term,
    Vocabulary,
    VocabularyError,
    VocabularyPlan,
    plan_vocabulary,
    split_terms,
)
from cloud_bridge.core.pseudonyms import (
    SECRET_BYTES,
    Kind,
    Serials,
    StorePseudonyms,
    store_key,
)
from cloud_bridge.core.records import Delivery, IncomingEvent, QuarantinedEvent, RecordOutcome
from cloud_bridge.core.redemptions import Redemption, RedemptionClaim
from cloud_bridge.core.segments import NO_VISITS, SegmentPolicy
from cloud_bridge.errors import RecordsError
from edge.adapters.sqlite_db import (
    LOYALTY_APPLICATION_ID,
    Writable,
    open_database,
    os_writable,
)
from edge.core import wire
from edge.core.preferences import WEEK_S
from edge.errors import EmptyDatabase, MissingDatabase, StorageError
from edge.logutil import OnceLogger

_MIGRATIONS: tuple[str, ...] = (
    # 1: first schema
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE stores (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        roster_version INTEGER NOT NULL DEFAULT 1,
        campaigns_version INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE members (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        tier TEXT NOT NULL,
        shopper_token TEXT NOT NULL UNIQUE,
        consent INTEGER NOT NULL DEFAULT 1,
        joined_at REAL NOT NULL
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (id),
        kind TEXT NOT NULL CHECK (kind IN ('app', 'tag')),
        identity_key BLOB NOT NULL CHECK (length(identity_key) = 16),
        exponent INTEGER NOT NULL CHECK (exponent BETWEEN 0 AND 15),
        active INTEGER NOT NULL DEFAULT 1,
        enrolled_at REAL NOT NULL
    );
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        store_id TEXT REFERENCES stores (id),  -- NULL: every store
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        tiers TEXT NOT NULL,                    -- comma-separated tier ids
        cooldown_s REAL NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE TABLE visits (
        event_id TEXT PRIMARY KEY REFERENCES events (event_id),
        member_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ts REAL NOT NULL,
        detected_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        rssi_dbm REAL NOT NULL
    );
    CREATE TABLE offers (
        event_id TEXT PRIMARY KEY REFERENCES events (event_id),
        visit_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        campaign_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ts REAL NOT NULL,
        detected_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        -- pending: not yet handed to the broker; sent: PUBACKed, no receipt from the app yet;
        -- received: the app confirmed it; suppressed: unknown member or campaign, or no consent.
        delivery TEXT NOT NULL CHECK (delivery IN ('pending', 'sent', 'received', 'suppressed')),
        shopper_token TEXT,
        delivery_topic TEXT,
        delivery_payload BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL,
        received_at REAL
    );
    CREATE INDEX offers_unreceived ON offers (delivery) WHERE delivery IN ('pending', 'sent');
    CREATE INDEX visits_member ON visits (member_id, ts);
    -- Any change a gateway must hear about bumps the version it syncs (gateways apply only newer).
    CREATE TRIGGER devices_added AFTER INSERT ON devices
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER devices_changed AFTER UPDATE ON devices
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER devices_removed AFTER DELETE ON devices
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER members_changed AFTER UPDATE OF tier, consent ON members
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER members_removed AFTER DELETE ON members
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER campaigns_added AFTER INSERT ON campaigns BEGIN
        UPDATE stores SET campaigns_version = campaigns_version + 1
        WHERE NEW.store_id IS NULL OR id = NEW.store_id;
    END;
    CREATE TRIGGER campaigns_changed AFTER UPDATE ON campaigns BEGIN
        UPDATE stores SET campaigns_version = campaigns_version + 1
        WHERE NEW.store_id IS NULL OR OLD.store_id IS NULL OR id IN (NEW.store_id, OLD.store_id);
    END;
    CREATE TRIGGER campaigns_removed AFTER DELETE ON campaigns BEGIN
        UPDATE stores SET campaigns_version = campaigns_version + 1
        WHERE OLD.store_id IS NULL OR id = OLD.store_id;
    END;
    CREATE TRIGGER settings_changed AFTER UPDATE ON settings
        BEGIN UPDATE stores SET campaigns_version = campaigns_version + 1; END;
    """,
    # 2: the gateways the bridge seals rosters to (issue 4): each one's X25519 public key, as
    # `edge-gateway provision` printed it. The database serves one chain (`[bridge] chain`).
    """
    CREATE TABLE gateways (
        store_id TEXT NOT NULL REFERENCES stores (id),
        id TEXT NOT NULL,
        public_key BLOB NOT NULL CHECK (length(public_key) = 32),
        added_at REAL NOT NULL,
        PRIMARY KEY (store_id, id)
    );
    """,
    # 3: per-store pseudonyms (issue 4). Every member and device gets a serial number, never reused
    # (AUTOINCREMENT), that the bridge turns into a different pseudonym for each store
    # (cloud_bridge/core/pseudonyms.py) and maps back through this table.
    """
    CREATE TABLE serials (
        serial INTEGER PRIMARY KEY AUTOINCREMENT,
        kind INTEGER NOT NULL CHECK (kind IN (1, 2)),  -- 1: device, 2: member
        record_id TEXT NOT NULL,
        UNIQUE (kind, record_id)
    );
    INSERT INTO serials (kind, record_id) SELECT 2, id FROM members ORDER BY rowid;
    INSERT INTO serials (kind, record_id) SELECT 1, id FROM devices ORDER BY rowid;
    CREATE TRIGGER members_serial AFTER INSERT ON members
        BEGIN INSERT OR IGNORE INTO serials (kind, record_id) VALUES (2, NEW.id); END;
    CREATE TRIGGER devices_serial AFTER INSERT ON devices
        BEGIN INSERT OR IGNORE INTO serials (kind, record_id) VALUES (1, NEW.id); END;
    CREATE TRIGGER members_serial_gone AFTER DELETE ON members
        BEGIN DELETE FROM serials WHERE kind = 2 AND record_id = OLD.id; END;
    CREATE TRIGGER devices_serial_gone AFTER DELETE ON devices
        BEGIN DELETE FROM serials WHERE kind = 1 AND record_id = OLD.id; END;
    """,
    # 4: cloned tags (issue 4): where each store is (NULL: unknown), a device's visits by time, and
    # the alerts for devices seen at two stores too far apart for the time between.
    """
    ALTER TABLE stores ADD COLUMN latitude REAL CHECK (latitude BETWEEN -90 AND 90);
    ALTER TABLE stores ADD COLUMN longitude REAL CHECK (longitude BETWEEN -180 AND 180);
    CREATE INDEX visits_device ON visits (device_id, ts);
    CREATE TABLE clone_alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('too_fast', 'simultaneous')),
        -- The two visits, earlier first by radio time: one alert per pair, however often resent.
        first_event_id TEXT NOT NULL REFERENCES visits (event_id),
        first_store_id TEXT NOT NULL,
        first_ts REAL NOT NULL,
        second_event_id TEXT NOT NULL REFERENCES visits (event_id),
        second_store_id TEXT NOT NULL,
        second_ts REAL NOT NULL,
        elapsed_s REAL NOT NULL,
        distance_km REAL,                   -- NULL: a store's location is unknown
        speed_kmh REAL,                     -- NULL: distance unknown, or no time between
        created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'revoked', 'dismissed')),
        closed_at REAL,
        UNIQUE (first_event_id, second_event_id)
    );
    CREATE INDEX clone_alerts_open ON clone_alerts (id) WHERE status = 'open';
    """,
    # 5: the chain-wide campaign cooldown's lookup: a member's offers of one campaign, by time.
    """
    CREATE INDEX offers_member_campaign ON offers (member_id, campaign_id, ts);
    """,
    # 6: nothing forged counts, offers never abandoned silently (issue 9). A campaign's offers are
    # resent until `validity_s` after they were issued, then recorded `expired`; a suppressed offer
    # says why (cloud_bridge/core/admission.py); events with times outside the bridge's tolerance
    # are kept in quarantine, not counted. SQLite cannot change a CHECK: the offers table is rebuilt.
    """
    ALTER TABLE campaigns ADD COLUMN validity_s REAL NOT NULL DEFAULT 3600;
    CREATE TABLE offers_6 (
        event_id TEXT PRIMARY KEY REFERENCES events (event_id),
        visit_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        campaign_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ts REAL NOT NULL,
        detected_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        -- pending: not yet handed to the broker; sent: PUBACKed, no receipt from the app yet;
        -- received: the app confirmed it; suppressed: refused (suppressed_reason says why);
        -- expired: not confirmed by expires_at (the campaign's validity_s after it was issued).
        delivery TEXT NOT NULL
            CHECK (delivery IN ('pending', 'sent', 'received', 'suppressed', 'expired')),
        shopper_token TEXT,
        delivery_topic TEXT,
        delivery_payload BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL,
        received_at REAL,
        suppressed_reason TEXT,
        expires_at REAL
    );
    INSERT INTO offers_6 (event_id, visit_id, member_id, campaign_id, store_id, gateway, ts,
        detected_at, recorded_at, delivery, shopper_token, delivery_topic, delivery_payload,
        attempts, sent_at, received_at, suppressed_reason, expires_at)
    SELECT event_id, visit_id, member_id, campaign_id, store_id, gateway, ts, detected_at,
        recorded_at, delivery, shopper_token, delivery_topic, delivery_payload, attempts, sent_at,
        received_at, CASE delivery WHEN 'suppressed' THEN 'unknown' END, recorded_at + 3600
    FROM offers;
    DROP TABLE offers;
    ALTER TABLE offers_6 RENAME TO offers;
    CREATE INDEX offers_unreceived ON offers (delivery) WHERE delivery IN ('pending', 'sent');
    CREATE INDEX offers_member_campaign ON offers (member_id, campaign_id, ts);
    CREATE INDEX offers_member ON offers (member_id, ts);
    CREATE TABLE quarantine (
        event_id TEXT PRIMARY KEY REFERENCES events (event_id),
        kind TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ts REAL,                    -- NULL: not a finite number
        detected_at REAL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,      -- the event as received, as JSON
        received_at REAL NOT NULL
    );
    """,
    # 7: identity keys sealed at rest (issue 9; cloud_bridge/core/keyseal.py). A sealed device keeps
    # 16 zero bytes in identity_key (its CHECK stays) and the sealed key here; NULL: not sealed yet,
    # which opening with the data key fixes (`_seal_clear_keys`).
    """
    ALTER TABLE devices ADD COLUMN sealed_key BLOB
        CHECK (sealed_key IS NULL OR length(sealed_key) = 45);
    """,
    # 8: shopper preferences (issue 10; cloud_bridge/core/preferences.py). The chain's vocabulary
    # gives each term a bit once (never reused; a term dropped from the config is inactive and
    # keeps it). A member's preferences are kept by term name, only with consent: withdrawing it
    # forgets them. A change reaches the rosters (a member with an active device), a new term the
    # campaign syncs (their term lists), and campaigns say what they serve.
    """
    CREATE TABLE preference_terms (
        kind TEXT NOT NULL CHECK (kind IN ('interest', 'promotion')),
        name TEXT NOT NULL,
        bit INTEGER NOT NULL CHECK (bit BETWEEN 0 AND 62),
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (kind, name),
        UNIQUE (kind, bit)
    );
    CREATE TABLE member_prefs (
        member_id TEXT PRIMARY KEY REFERENCES members (id) ON DELETE CASCADE,
        interests TEXT NOT NULL DEFAULT '',     -- comma-separated interest terms
        promotions TEXT NOT NULL DEFAULT '',    -- comma-separated promotion types
        per_day INTEGER NOT NULL CHECK (per_day BETWEEN 0 AND 24),
        per_week INTEGER NOT NULL CHECK (per_week BETWEEN 0 AND 100),
        updated_at REAL NOT NULL
    );
    ALTER TABLE campaigns ADD COLUMN promotion_type TEXT;        -- NULL: none declared
    ALTER TABLE campaigns ADD COLUMN interests TEXT NOT NULL DEFAULT '';  -- '': any interest
    CREATE TRIGGER member_prefs_added AFTER INSERT ON member_prefs
        WHEN EXISTS (SELECT 1 FROM devices WHERE member_id = NEW.member_id AND active)
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER member_prefs_changed AFTER UPDATE ON member_prefs
        WHEN EXISTS (SELECT 1 FROM devices WHERE member_id = NEW.member_id AND active)
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER member_prefs_removed AFTER DELETE ON member_prefs
        WHEN EXISTS (SELECT 1 FROM devices WHERE member_id = OLD.member_id AND active)
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER member_prefs_need_consent AFTER UPDATE OF consent ON members
        WHEN NOT NEW.consent
        BEGIN DELETE FROM member_prefs WHERE member_id = NEW.id; END;
    CREATE TRIGGER preference_terms_added AFTER INSERT ON preference_terms
        BEGIN UPDATE stores SET campaigns_version = campaigns_version + 1; END;
    """,
    # 9: the whole visit (issue 10). How each visit's member was heard (platform: NULL from older
    # gateways), and each visit's end, keyed by the visit: from entered_at (first heard arriving) to
    # ended_at (last heard near the door), duration_s = ended_at - entered_at. An end may arrive
    # before its visit (resent, or another bridge instance): it is kept, and counts once the visit
    # of the same member, device and store is there (the view visit_times).
    """
    ALTER TABLE visits ADD COLUMN platform TEXT
        CHECK (platform IS NULL OR platform IN ('android', 'ios', 'tag'));
    CREATE TABLE visit_ends (
        visit_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE REFERENCES events (event_id),
        member_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        entered_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        duration_s REAL NOT NULL CHECK (duration_s >= 0),
        reason TEXT NOT NULL CHECK (reason IN ('timeout', 'restart', 'max_length')),
        platform TEXT CHECK (platform IS NULL OR platform IN ('android', 'ios', 'tag')),
        detected_at REAL NOT NULL,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX visit_ends_member ON visit_ends (member_id, ended_at);
    CREATE VIEW visit_times AS
        SELECT v.event_id AS visit_id, v.member_id, v.device_id, v.store_id, v.gateway,
            v.platform, v.ts AS entry_ts, e.entered_at, e.ended_at, e.duration_s, e.reason,
            e.event_id AS end_event_id
        FROM visits v JOIN visit_ends e ON e.visit_id = v.event_id AND e.member_id = v.member_id
            AND e.device_id = v.device_id AND e.store_id = v.store_id;
    """,
    # 10: campaign management (issue 11; cloud_bridge/core/campaigns.py). A campaign's status
    # (active, paused, archived: final) and when it last changed; `active` stays 1 exactly when the
    # status is active. A campaign may target several stores: none in campaign_stores and no
    # store_id means every store (a store_id, as older rows have, still targets that one store).
    """
    ALTER TABLE campaigns ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'archived'));
    ALTER TABLE campaigns ADD COLUMN updated_at REAL;
    UPDATE campaigns SET status = 'paused' WHERE NOT active;
    CREATE TABLE campaign_stores (
        campaign_id TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
        store_id TEXT NOT NULL REFERENCES stores (id),
        PRIMARY KEY (campaign_id, store_id)
    );
    """,
    # 11: campaigns a marketer runs, delivers anywhere and measures (issue 11).
    # - Stores: their IANA time zone (schedules, local days) and tags (a region, a format) that
    #   campaigns target.
    # - Campaigns: content (image, deep link, one code for all or a pool in campaign_codes), the
    #   store tags and audience (segments, visit counts) they target, a schedule (JSON, local
    #   dates and times: cloud_bridge/core/campaigns.py), caps per member, a daily budget and a
    #   holdout share.
    # - Offers: the table is rebuilt (SQLite cannot change a CHECK) with two more states, holdout
    #   (the member is in the campaign's control group: recorded, never sent) and dead (a channel
    #   gave up: visible to IT, `cloud-bridge deliveries`), the channel it goes by, the code it
    #   carries, the next attempt and the last error of a webhook delivery, and when the shopper
    #   opened or dismissed it.
    # - Redemptions: one per offer, from the till or the app, linked to the offer (and through it
    #   to the visit).
    """
    ALTER TABLE stores ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
    CREATE TABLE store_tags (
        store_id TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (store_id, tag)
    );
    CREATE INDEX store_tags_tag ON store_tags (tag);
    ALTER TABLE campaigns ADD COLUMN image_url TEXT;
    ALTER TABLE campaigns ADD COLUMN deep_link TEXT;
    ALTER TABLE campaigns ADD COLUMN code TEXT;                     -- NULL: none, or a pool
    ALTER TABLE campaigns ADD COLUMN store_tags TEXT NOT NULL DEFAULT '';  -- comma-separated
    ALTER TABLE campaigns ADD COLUMN segments TEXT NOT NULL DEFAULT '';    -- '': every member
    ALTER TABLE campaigns ADD COLUMN min_visits INTEGER CHECK (min_visits >= 0);
    ALTER TABLE campaigns ADD COLUMN max_visits INTEGER CHECK (max_visits >= 0);
    ALTER TABLE campaigns ADD COLUMN schedule TEXT;                 -- JSON; NULL: always
    ALTER TABLE campaigns ADD COLUMN per_member_day INTEGER CHECK (per_member_day >= 0);
    ALTER TABLE campaigns ADD COLUMN per_member_week INTEGER CHECK (per_member_week >= 0);
    ALTER TABLE campaigns ADD COLUMN daily_budget INTEGER CHECK (daily_budget >= 0);
    ALTER TABLE campaigns ADD COLUMN holdout_pct REAL NOT NULL DEFAULT 0
        CHECK (holdout_pct BETWEEN 0 AND 100);
    ALTER TABLE campaigns ADD COLUMN created_at REAL;
    CREATE TABLE campaign_codes (
        code TEXT PRIMARY KEY,                  -- unique in the chain: a till names only the code
        campaign_id TEXT NOT NULL REFERENCES campaigns (id),
        offer_id TEXT UNIQUE,                   -- NULL: not given out yet
        added_at REAL NOT NULL
    );
    CREATE INDEX campaign_codes_free ON campaign_codes (campaign_id) WHERE offer_id IS NULL;
    CREATE TABLE offers_11 (
        event_id TEXT PRIMARY KEY REFERENCES events (event_id),
        visit_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        campaign_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ts REAL NOT NULL,
        detected_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        -- pending: not yet handed to its channel; sent: the broker PUBACKed it or the push
        -- service answered 2xx, no receipt from the app yet; received: the app confirmed it;
        -- suppressed: refused (suppressed_reason says why); expired: not confirmed by expires_at;
        -- holdout: the member is in the campaign's control group (recorded, never sent);
        -- dead: its channel gave up on it (last_error says why): IT's to look at.
        delivery TEXT NOT NULL CHECK (delivery IN
            ('pending', 'sent', 'received', 'suppressed', 'expired', 'holdout', 'dead')),
        shopper_token TEXT,
        delivery_topic TEXT,
        delivery_payload BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL,
        received_at REAL,
        suppressed_reason TEXT,
        expires_at REAL,
        channel TEXT NOT NULL DEFAULT 'mqtt' CHECK (channel IN ('mqtt', 'webhook')),
        code TEXT,
        next_attempt_at REAL,
        last_error TEXT,
        opened_at REAL,
        dismissed_at REAL
    );
    INSERT INTO offers_11 (event_id, visit_id, member_id, campaign_id, store_id, gateway, ts,
        detected_at, recorded_at, delivery, shopper_token, delivery_topic, delivery_payload,
        attempts, sent_at, received_at, suppressed_reason, expires_at)
    SELECT event_id, visit_id, member_id, campaign_id, store_id, gateway, ts, detected_at,
        recorded_at, delivery, shopper_token, delivery_topic, delivery_payload, attempts, sent_at,
        received_at, suppressed_reason, expires_at
    FROM offers;
    DROP TABLE offers;
    ALTER TABLE offers_11 RENAME TO offers;
    CREATE INDEX offers_unreceived ON offers (delivery) WHERE delivery IN ('pending', 'sent');
    CREATE INDEX offers_member_campaign ON offers (member_id, campaign_id, ts);
    CREATE INDEX offers_member ON offers (member_id, ts);
    CREATE INDEX offers_campaign ON offers (campaign_id, ts);
    CREATE INDEX offers_store ON offers (store_id, ts);
    CREATE INDEX offers_visit ON offers (visit_id);
    CREATE TABLE redemptions (
        offer_id TEXT PRIMARY KEY REFERENCES offers (event_id),
        code TEXT,
        store_id TEXT,                          -- where it was redeemed (NULL: online, unknown)
        source TEXT NOT NULL CHECK (source IN ('pos', 'app')),
        redeemed_at REAL NOT NULL,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX visits_store ON visits (store_id, ts);
    """,
    # 12: a campaign change moves the campaigns_version of only the stores whose sync it changes
    # (issue 11). The bridge's own writes (which set updated_at) compare every store's sync before
    # and after, in the same transaction (SqliteLoyaltyRecords._bump_changed); the triggers now
    # fire only for rows changed by hand (updated_at not set or kept), as broadly as before.
    """
    DROP TRIGGER campaigns_added;
    DROP TRIGGER campaigns_changed;
    CREATE TRIGGER campaigns_added AFTER INSERT ON campaigns WHEN NEW.updated_at IS NULL BEGIN
        UPDATE stores SET campaigns_version = campaigns_version + 1
        WHERE NEW.store_id IS NULL OR id = NEW.store_id;
    END;
    CREATE TRIGGER campaigns_changed AFTER UPDATE ON campaigns
        WHEN NEW.updated_at IS OLD.updated_at BEGIN
        UPDATE stores SET campaigns_version = campaigns_version + 1
        WHERE NEW.store_id IS NULL OR OLD.store_id IS NULL OR id IN (NEW.store_id, OLD.store_id);
    END;
    """,
    # 13: the report's indices (issue 11; cloud_bridge/adapters/sqlite_report.py). Covering
    # indices, so that a year of 100 stores reports in seconds: a store's visits by time with
    # whose they are, a member's visits by time with where, a visit's end by its visit. Each
    # replaces a narrower one with the same leading columns, so the bridge keeps one index each.
    """
    DROP INDEX visits_store;
    CREATE INDEX visits_store_cover ON visits (store_id, ts, member_id, device_id, event_id);
    DROP INDEX visits_member;
    CREATE INDEX visits_member_store ON visits (member_id, ts, store_id);
    CREATE INDEX visit_ends_visit ON visit_ends (visit_id, member_id, device_id, store_id, duration_s);
    """,
    # 14: the webhook channel's queue (due attempts, oldest first) and its dead letters (counted
    # for the bridge's status every few seconds) without a scan of every offer (issue 11).
    """
    CREATE INDEX offers_webhook_due ON offers (next_attempt_at)
        WHERE channel = 'webhook' AND delivery = 'pending';
    CREATE INDEX offers_dead ON offers (recorded_at) WHERE delivery = 'dead';
    """,
    # 15: members' audience (issue 11; cloud_bridge/core/segments.py), as last computed from their
    # visits: the segments they are in and their visits in the last 365 days. A member without a
    # row was never heard (new, 0 visits). A change reaches the rosters (a member with an active
    # device).
    """
    CREATE TABLE member_audience (
        member_id TEXT PRIMARY KEY REFERENCES members (id) ON DELETE CASCADE,
        segments INTEGER NOT NULL CHECK (segments BETWEEN 0 AND 7),
        visits INTEGER NOT NULL CHECK (visits >= 0),
        computed_at REAL NOT NULL
    );
    CREATE TRIGGER member_audience_added AFTER INSERT ON member_audience
        WHEN EXISTS (SELECT 1 FROM devices WHERE member_id = NEW.member_id AND active)
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    CREATE TRIGGER member_audience_changed AFTER UPDATE ON member_audience
        WHEN (NEW.segments != OLD.segments OR NEW.visits != OLD.visits)
            AND EXISTS (SELECT 1 FROM devices WHERE member_id = NEW.member_id AND active)
        BEGIN UPDATE stores SET roster_version = roster_version + 1; END;
    """,
    # 16: offers by the code they carry: a redemption of a shared code the campaign no longer has
    # (changed since the offers went out) finds them without a scan of every offer (issue 11).
    """
    CREATE INDEX offers_code ON offers (code, member_id) WHERE code IS NOT NULL;
    """,
    # 17: campaign revisions and their history (issue 11; docs/campaigns.md). Every change through
    # the bridge (CLI or API) moves the revision by one and writes its history row in the same
    # transaction; a campaign from before keeps revision 1, with no history row for it.
    """
    ALTER TABLE campaigns ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE campaign_changes (
        campaign_id TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
        revision INTEGER NOT NULL CHECK (revision >= 1),
        changed_at REAL NOT NULL,
        action TEXT NOT NULL
            CHECK (action IN ('create', 'update', 'pause', 'resume', 'archive', 'codes')),
        fields TEXT NOT NULL,                   -- JSON list of the field names it changed
        source TEXT NOT NULL CHECK (source IN ('cli', 'api')),
        PRIMARY KEY (campaign_id, revision)
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
#: wire.CampaignSync.campaigns' most: a gateway refuses a sync with more.
MAX_SYNC_CAMPAIGNS = 256
_LOGGER = logging.getLogger(__name__)
DEFAULT_MEMBER_COOLDOWN_S = 4 * 3600.0
#: How often every member's segments are recomputed (they move with time alone; by day).
AUDIENCE_REFRESH_S = 3600.0
_CAMPAIGN_COLUMNS = (
    "id, title, body, tiers, cooldown_s, priority, validity_s, promotion_type, interests, "
    "status, updated_at, store_id, image_url, deep_link, code, store_tags, segments, min_visits, "
    "max_visits, schedule, per_member_day, per_member_week, daily_budget, holdout_pct, created_at, "
    "revision"
)
#: A receipt (:status received, opened or dismissed; the latter two imply received) for offer
#: :id at :now. Idempotent: the first time of each is kept; it changes a row only when it adds
#: something. Pending, sent and dead offers become received (the app has it: stop resending).
#: An expired offer stays as it was (its validity ended before the app confirmed it); holdout
#: offers and those suppressed before they were sent never reached anyone: callers refuse receipts
#: for them. One suppressed after it was sent (preferences changed) is in the app: its receipt's
#: times are recorded and it stays suppressed, as it stays redeemable. A member who withdrew
#: consent is not tracked any more: their receipts change nothing (the caller still answers).
RECEIPT_UPDATE = (
    "UPDATE offers SET received_at = coalesce(received_at, :now), "
    "opened_at = CASE WHEN :status = 'opened' THEN coalesce(opened_at, :now) ELSE opened_at END, "
    "dismissed_at = CASE WHEN :status = 'dismissed' THEN coalesce(dismissed_at, :now) "
    "ELSE dismissed_at END, "
    "delivery = CASE WHEN delivery IN ('pending', 'sent', 'dead') THEN 'received' "
    "ELSE delivery END, "
    "next_attempt_at = NULL "
    "WHERE event_id = :id AND (delivery IN ('pending', 'sent', 'dead', 'received') "
    "OR (delivery = 'suppressed' AND sent_at IS NOT NULL AND EXISTS "
    "(SELECT 1 FROM members m WHERE m.id = offers.member_id AND m.consent))) "
    "AND (delivery IN ('pending', 'sent', 'dead') OR received_at IS NULL "
    "OR (:status = 'opened' AND opened_at IS NULL) "
    "OR (:status = 'dismissed' AND dismissed_at IS NULL))"
)
#: An offer that may have reached the shopper: not suppressed, or suppressed (consent withdrawn,
#: preferences changed) only after it was handed to the broker.
_MAY_HAVE_REACHED = "(delivery != 'suppressed' OR sent_at IS NOT NULL)"


ALERT_SELECT = (
    "SELECT id, device_id, member_id, reason, first_event_id, first_store_id, first_ts, "
    "second_event_id, second_store_id, second_ts, elapsed_s, distance_km, speed_kmh, status, "
    "created_at FROM clone_alerts"
)


def alert_from_row(r: sqlite3.Row | tuple[Any, ...]) -> wire.CloneAlert:
    return wire.CloneAlert(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        r[13],
        r[14],
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _location_or_none(lat: float | None, lon: float | None) -> GeoPoint | None:
    """A stored location; a half or out-of-range one (edited by hand) counts as unknown."""
    try:
        return location_from(lat, lon)
    except LocationError:
        return None


async def read_vocabulary(db: aiosqlite.Connection) -> Vocabulary:
    """The chain's preference terms as stored (every kind, retired ones too)."""
    async with db.execute("SELECT kind, name, bit, active FROM preference_terms") as cursor:
        return Vocabulary(tuple([Term(r[0], r[1], int(r[2]), bool(r[3])) async for r in cursor]))


async def read_member_prefs(db: aiosqlite.Connection, member: str) -> MemberPreferences | None:
    """The member's stated preferences, None if none."""
    async with db.execute(
        "SELECT interests, promotions, per_day, per_week, updated_at FROM member_prefs "
        "WHERE member_id = ?",
        (member,),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else _prefs_from_row(member, row)


async def suppress_unwanted_offers(
    db: aiosqlite.Connection, stated: MemberPreferences, vocabulary: Vocabulary
) -> int:
    """Record suppressed the member's offers not yet confirmed by the app that what they state
    now rules out (cloud_bridge/core/admission.py, `check_undelivered`), so none is sent (again);
    how many. Runs in the caller's transaction."""
    async with db.execute(
        "SELECT o.event_id, c.promotion_type, c.interests FROM offers o "
        "JOIN campaigns c ON c.id = o.campaign_id "
        "WHERE o.member_id = ? AND o.delivery IN ('pending', 'sent')",
        (stated.member,),
    ) as cursor:
        rows = [r async for r in cursor]
    prefs = stated.roster_prefs(vocabulary)
    interest_bits, promotion_bits = vocabulary.bits("interest"), vocabulary.bits("promotion")
    refused = []
    for event_id, promotion_type, interests in rows:
        served = ServedTerms(promotion_type or None, split_terms(interests))
        refusal = check_undelivered(prefs, served, interest_bits, promotion_bits)
        if refusal is not None:
            refused.append((refusal.value, event_id))
    await db.executemany(
        "UPDATE offers SET delivery = 'suppressed', suppressed_reason = ? "
        "WHERE event_id = ? AND delivery IN ('pending', 'sent')",
        refused,
    )
    return len(refused)


def _prefs_from_row(member: str, row: sqlite3.Row | tuple[Any, ...]) -> MemberPreferences:
    """(interests, promotions, per_day, per_week, updated_at) as stored."""
    return MemberPreferences(
        member, split_terms(row[0]), split_terms(row[1]), int(row[2]), int(row[3]), float(row[4])
    )


def _definition_from_row(
    r: sqlite3.Row | tuple[Any, ...], stores: tuple[str, ...]
) -> CampaignDefinition:
    """A campaigns row (_CAMPAIGN_COLUMNS) and its listed stores; an older row's store_id is the
    one store it targets. InvalidCampaign if its schedule is not a schedule's JSON."""
    schedule = None
    if r[19] is not None:
        try:
            stored = json.loads(r[19])
        except (ValueError, TypeError) as exc:
            raise InvalidCampaign("schedule", f"is not JSON ({exc})") from None
        if not isinstance(stored, dict):
            raise InvalidCampaign("schedule", "is not a JSON object")
        schedule = CampaignSchedule.from_json(stored)
    return CampaignDefinition(
        id=r[0],
        title=r[1],
        body=r[2],
        tiers=split_terms(r[3]),
        cooldown_s=float(r[4]),
        priority=int(r[5]),
        validity_s=float(r[6]),
        promotion_type=r[7] or None,
        interests=split_terms(r[8]),
        stores=(r[11],) if r[11] is not None else stores,
        image_url=r[12],
        deep_link=r[13],
        code=r[14],
        store_tags=split_terms(r[15]),
        segments=split_terms(r[16]),
        min_visits=r[17],
        max_visits=r[18],
        schedule=schedule,
        per_member_day=r[20],
        per_member_week=r[21],
        daily_budget=r[22],
        holdout_pct=float(r[23]),
    )


def check_campaign_terms(definition: CampaignDefinition) -> None:
    """InvalidCampaign if a stored row (edited by hand) would make every gateway refuse the whole
    sync: a term that is not an id, a segment that is not one, a schedule that cannot run."""
    d = definition
    for what, terms in (
        ("tiers", d.tiers),
        ("promotion_type", (d.promotion_type or "none",)),
        ("interests", d.interests),
    ):
        for term in terms:
            try:
                wire.check_id(term, f"campaigns.{what}")
            except wire.WireError as exc:
                raise InvalidCampaign(what, exc.reason) from None
    for segment in d.segments:
        if segment not in wire.SEGMENTS:
            raise InvalidCampaign("segments", f"{segment!r} is not a segment")
    for name in ("min_visits", "max_visits", "per_member_day", "per_member_week", "daily_budget"):
        value = getattr(d, name)
        if value is not None and not (isinstance(value, int) and 0 <= value <= 1_000_000_000):
            raise InvalidCampaign(name, f"{value!r} is not a count")
    if d.schedule is not None:
        check_schedule(d.schedule)


def _campaign_spec(
    d: CampaignDefinition,
    zone: ZoneInfo | None,
    gateways: Sequence[tuple[str, str]],
    store: str,
) -> wire.CampaignSpec:
    """A checked definition as `store`'s sync carries it: its schedule in the store's zone, its
    gateways' shares of the daily budget (split over `gateways`, those of every targeted store)."""
    segments = tuple(s for s in wire.SEGMENTS if s in d.segments)
    return wire.CampaignSpec(
        d.id,
        d.title,
        d.body,
        d.tiers,
        d.cooldown_s,
        d.priority,
        promotion_type=d.promotion_type,
        interests=d.interests,
        schedule=None if d.schedule is None or zone is None else wire_schedule(d.schedule, zone),
        per_member_day=d.per_member_day,
        per_member_week=d.per_member_week,
        gateway_budgets=gateway_shares(d.daily_budget, gateways, store),
        segments=segments,
        min_visits=d.min_visits,
        max_visits=d.max_visits,
    )


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _one_at_a_time(
    method: Callable[Concatenate[SqliteLoyaltyRecords, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[SqliteLoyaltyRecords, _P], Coroutine[Any, Any, _T]]:
    """Run a method alone on the connection: every write (commit, rollback), and every read the
    bridge's loops make while it runs.

    The bridge's loops share one connection, and a transaction is the connection's: without this,
    one coroutine's commit or rollback lands in the middle of another's batch, and a read between
    two statements of `record()` sees its offers before they are committed (the deliver loop would
    send them, and `record()` send them again). Not reentrant: a locked method calls only
    undecorated helpers.
    """

    async def alone(self: SqliteLoyaltyRecords, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with self._lock:
            return await method(self, *args, **kwargs)

    # Not functools.wraps: mypy loses the Concatenate signature through it.
    alone.__name__, alone.__qualname__ = method.__name__, method.__qualname__
    alone.__doc__ = method.__doc__
    return alone


async def _sealer(db: aiosqlite.Connection, path: Path, data_key: DataKey) -> IdentityKeySealer:
    """The sealer for `data_key`, once the database's check value says it is the right key; keys
    still in clear are sealed now."""
    sealer = IdentityKeySealer(data_key.key, secrets.token_bytes)
    try:
        # The first key given to a database is its key (OR IGNORE: two connections may race here).
        await db.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('data_key_check', ?)",
            (sealer.check_value().hex(),),
        )
        await db.commit()
        rows = list(
            await db.execute_fetchall("SELECT value FROM settings WHERE key = 'data_key_check'")
        )
        try:
            check = bytes.fromhex(str(rows[0][0])) if rows else b""
        except ValueError:
            check = b""
        if not sealer.matches(check):
            raise RecordsError(
                f"{path}: the data key from {data_key.source} is not the one its identity keys "
                f"are sealed with; give the bridge the key file made with this database (or "
                f"${DATA_KEY_ENV})"
            )
        await _seal_clear_keys(db, sealer)
    except sqlite3.Error as exc:
        raise RecordsError(f"cannot seal the identity keys in {path}: {exc}") from exc
    return sealer


async def _seal_clear_keys(db: aiosqlite.Connection, sealer: IdentityKeySealer) -> None:
    """Seal every identity key still in clear (a database from before sealing), then make sure the
    clear bytes are gone from the file: secure_delete zeroes what the updates free, and a TRUNCATE
    checkpoint folds the WAL in and empties it."""
    clear = list(
        await db.execute_fetchall(
            "SELECT id, identity_key FROM devices WHERE sealed_key IS NULL "
            "AND identity_key != zeroblob(16)"
        )
    )
    if not clear:
        return
    await db.execute("PRAGMA secure_delete = ON")
    await db.executemany(
        "UPDATE devices SET sealed_key = ?, identity_key = zeroblob(16) WHERE id = ?",
        [(sealer.seal(str(ref), bytes(key)), ref) for ref, key in clear],
    )
    await db.commit()
    await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    _LOGGER.info("sealed %d identity keys that were stored in clear", len(clear))


@dataclass(frozen=True, slots=True)
class _Content:
    """What an offer carries of its campaign beyond title and body (issue 11)."""

    image_url: str | None
    deep_link: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What recording a trigger leads to: a delivery, or why not (`refusal`), or the holdout."""

    delivery: Delivery | None
    refusal: str | None
    expires_at: float | None = None
    holdout: bool = False
    code: str | None = None  # the redemption code the offer carries

    @property
    def state(self) -> str:
        """The offer row's `delivery`."""
        return "pending" if self.delivery else "holdout" if self.holdout else "suppressed"


@dataclass(frozen=True, slots=True)
class RegisteredGateway:
    """A gateway the bridge sends rosters to, sealed to `public_key` (raw X25519, 32 bytes)."""

    store: str
    gateway: str
    public_key: bytes


async def _pseudonym_secret(db: aiosqlite.Connection, path: Path) -> bytes:
    """The chain's pseudonym secret, made on first open. Kept with the records it protects: whoever
    reads this database can read the members anyway; the secret keeps the wire and gateways blind."""
    try:
        await db.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('pseudonym_secret', ?)",
            (os.urandom(SECRET_BYTES).hex(),),
        )
        await db.commit()
        async with db.execute(
            "SELECT value FROM settings WHERE key = 'pseudonym_secret'"
        ) as cursor:
            row = await cursor.fetchone()
    except sqlite3.Error as exc:
        raise RecordsError(f"cannot read the pseudonym secret in {path}: {exc}") from exc
    try:
        secret = bytes.fromhex(str(row[0])) if row else b""
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise RecordsError(
            f"settings 'pseudonym_secret' in {path} is not {SECRET_BYTES} bytes of hex: restore it "
            "from a backup (a new one would make every gateway's pending events unreadable)"
        )
    return secret


class SqliteLoyaltyRecords:
    """The loyalty records on one SQLite file, through aiosqlite's single writer thread."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        chain: str,
        secret: bytes,
        clone_policy: ClonePolicy | None = None,
        sealer: IdentityKeySealer | None = None,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self.path = path
        self.chain = chain
        self._secret = secret
        self._pseudonyms: dict[str, StorePseudonyms] = {}
        self.clone_policy = clone_policy or ClonePolicy()
        self._lock = asyncio.Lock()  # see _one_at_a_time
        self._bad_rows = OnceLogger(_LOGGER)
        #: The bridge config's [segments] (core/segments.py); the app sets it after opening.
        self.segment_policy = SegmentPolicy()
        self._audience_as_of: float | None = None  # when refresh_audience last ran (wall clock)
        #: The channel of an offer to a visit heard from a platform (None: unknown), fixed when
        #: the offer is recorded: the config's [delivery] (BridgeConfig.delivery.channel_for).
        self.channel_for: Callable[[str | None], str] = lambda platform: "mqtt"

    async def alone(self, work: Callable[[aiosqlite.Connection], Awaitable[_T]]) -> _T:
        """Run `work` on the connection with nothing else of the records' in between (another
        adapter's queries on the same file: sqlite_deliveries.py); a failure is rolled back."""
        async with self._lock:
            try:
                return await work(self._db)
            except BaseException:
                await self._db.rollback()
                raise

    @classmethod
    async def open(
        cls,
        path: Path,
        chain: str,
        clone_policy: ClonePolicy | None = None,
        *,
        create: bool = False,
        writable: Writable = os_writable,
        data_key: DataKey | None = None,
    ) -> SqliteLoyaltyRecords:
        """Open the records at `path`; a missing file is an error unless `create` (the create-db
        command). A read-only, corrupt or too new file is refused (RecordsError, one line).

        With `data_key`, identity keys can be sealed and opened: a wrong key is refused here, and
        keys still in clear (a database from before sealing) are sealed now. Without it, everything
        but reading or writing identity keys works (the admin commands)."""
        try:
            db = await open_database(
                path,
                _MIGRATIONS,
                "loyalty database",
                foreign_keys=True,
                create=create,
                writable=writable,
                fix="; restore it from a backup",
                application_id=LOYALTY_APPLICATION_ID,
            )
        except MissingDatabase as exc:
            there = (
                "in that file (it is empty or another's)"
                if isinstance(exc, EmptyDatabase)
                else "there"
            )
            raise RecordsError(
                f"{path}: no loyalty database {there}; check the path ([bridge] database), or "
                f"create a new one with `cloud-bridge create-db {path}`"
            ) from exc
        except StorageError as exc:
            raise RecordsError(str(exc)) from exc
        try:
            secret = await _pseudonym_secret(db, path)
            sealer = None if data_key is None else await _sealer(db, path, data_key)
        except BaseException:
            await db.close()
            raise
        return cls(db, path, chain, secret, clone_policy, sealer)

    def pseudonyms(self, store: str) -> StorePseudonyms:
        """How `store`'s gateways know members and devices (cloud_bridge/core/pseudonyms.py)."""
        found = self._pseudonyms.get(store)
        if found is None:
            found = StorePseudonyms(store_key(self._secret, self.chain, store))
            self._pseudonyms[store] = found
        return found

    @_one_at_a_time
    async def serials(self) -> Serials:
        """Every device's and member's serial, for pseudonymizing rosters."""
        devices: dict[str, int] = {}
        members: dict[str, int] = {}
        async with self._db.execute("SELECT serial, kind, record_id FROM serials") as cursor:
            async for serial, kind, record_id in cursor:
                (devices if kind == Kind.DEVICE else members)[record_id] = serial
        return Serials(devices, members)

    async def _unmask(self, store: str, event: wire.Event) -> tuple[str, str | None] | None:
        """The records' member id (and device id, for a visit) behind `event`'s pseudonyms."""
        pseudonyms = self.pseudonyms(store)
        member_serial = pseudonyms.decode(Kind.MEMBER, event.member)
        if member_serial is None:
            return None
        serials = [member_serial]
        if isinstance(event, wire.Visit | wire.VisitEnd):
            device_serial = pseudonyms.decode(Kind.DEVICE, event.device)
            if device_serial is None:
                return None
            serials.append(device_serial)
        ids: dict[int, tuple[int, str]] = {}
        async with self._db.execute(
            f"SELECT serial, kind, record_id FROM serials WHERE serial IN "
            f"({','.join('?' * len(serials))})",
            serials,
        ) as cursor:
            async for serial, kind, record_id in cursor:
                ids[serial] = (kind, record_id)
        member = ids.get(member_serial)
        if member is None or member[0] != Kind.MEMBER:
            return None
        if len(serials) == 1:
            return member[1], None
        device = ids.get(serials[1])
        if device is None or device[0] != Kind.DEVICE:
            return None
        return member[1], device[1]

    async def unlock(self, data_key: DataKey) -> None:
        """Take the data key (as `open(data_key=...)` does): RecordsError if it is the wrong one."""
        self._sealer = await _sealer(self._db, self.path, data_key)

    def seal_identity_key(self, device: str, identity_key: bytes) -> bytes:
        """`identity_key` sealed for storing in `device`'s row (sealed_key)."""
        return self._need_sealer().seal(device, identity_key)

    def open_identity_key(self, device: str, clear: bytes, sealed: bytes | None) -> bytes:
        """A device row's identity key: `sealed` opened, or `clear` from a row not sealed yet."""
        if sealed is None:
            return clear
        try:
            return self._need_sealer().open(device, sealed)
        except SealError as exc:
            raise RecordsError(f"{self.path}: {exc.reason}") from None

    def _need_sealer(self) -> IdentityKeySealer:
        if self._sealer is None:
            raise RecordsError(
                f"{self.path}: identity keys need the data key; open the records with it"
            )
        return self._sealer

    @property
    def connection(self) -> aiosqlite.Connection:
        """The raw connection, for the seeding and admin commands."""
        return self._db

    @_one_at_a_time
    async def close(self) -> None:
        await self._db.close()

    @_one_at_a_time
    async def record(self, events: list[IncomingEvent], now_s: float) -> RecordOutcome:
        """Record a batch in one transaction; duplicates are acknowledged and otherwise ignored."""
        acks: dict[wire.GatewayAddress, list[str]] = {}
        deliveries: list[Delivery] = []
        new_visits: list[wire.Visit] = []
        visitors: set[str] = set()  # whose audience the batch's visits move
        new_offers: list[wire.OfferTrigger] = []
        new_ends: list[wire.VisitEnd] = []
        clone_alerts: list[wire.CloneAlert] = []
        duplicates = 0
        suppressed = 0
        unknown = 0
        quarantined = 0
        refused_offers: dict[str, int] = {}
        holdout = 0

        forged = 0
        db = self._db
        try:
            for incoming in events:
                gw, event = incoming.gateway, incoming.event
                acks.setdefault(gw, []).append(event.event_id)
                cursor = await db.execute(
                    "INSERT OR IGNORE INTO events (event_id, kind, store_id, gateway, received_at) "
                    "VALUES (?,?,?,?,?)",
                    (event.event_id, event.KIND, gw.store, gw.gateway, now_s),
                )
                if cursor.rowcount == 0:
                    duplicates += 1
                    continue
                if incoming.quarantine is not None:
                    # Times outside the bridge's tolerance: kept for IT, acknowledged, not counted.
                    await self._set_aside(gw, event, incoming.quarantine, now_s)
                    quarantined += 1
                    continue
                if incoming.forged is not None:
                    # A visit's end that contradicts itself: kept for IT, acknowledged, not counted.
                    await self._set_aside(gw, event, incoming.forged, now_s)
                    forged += 1
                    continue
                ids = await self._unmask(gw.store, event)
                if ids is None:
                    # Not a pseudonym the bridge gave this store: a gateway of another store
                    # replaying events, or a forgery. Acknowledged (so it is not resent forever),
                    # counted, not recorded.
                    unknown += 1
                    continue
                member, device = ids
                if not await self._consents(member):
                    # Consent withdrawn (or the member is gone) since the gateway's last sync: the
                    # event is acknowledged so the gateway forgets it, and nothing is recorded.
                    suppressed += 1
                    continue
                if isinstance(event, wire.Visit):
                    assert device is not None  # a visit names its device
                    await db.execute(
                        "INSERT INTO visits (event_id, member_id, device_id, store_id, gateway, "
                        "ts, detected_at, recorded_at, rssi_dbm, platform) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            event.event_id,
                            member,
                            device,
                            gw.store,
                            gw.gateway,
                            event.ts,
                            event.detected_at,
                            now_s,
                            event.rssi_dbm,
                            event.platform,
                        ),
                    )
                    new_visits.append(event)
                    visitors.add(member)
                    if await self._unlink_foreign_end(event, Visitor(member, device, gw.store)):
                        forged += 1
                    clone_alerts += await self._check_clone(gw.store, event, member, device, now_s)
                    continue
                if isinstance(event, wire.VisitEnd):
                    assert device is not None  # an end names its device
                    outcome = await self._record_end(gw, event, member, device, now_s)
                    if isinstance(outcome, ForgeryReason):
                        forged += 1
                    elif outcome is None:
                        duplicates += 1  # the visit had already ended (another end event)
                    else:
                        new_ends.append(event)
                    continue
                prepared = await self._prepare_delivery(gw, event, member, now_s)
                delivery, refusal = prepared.delivery, prepared.refusal
                await db.execute(
                    "INSERT INTO offers (event_id, visit_id, member_id, campaign_id, store_id, "
                    "gateway, ts, detected_at, recorded_at, delivery, shopper_token, "
                    "delivery_topic, delivery_payload, suppressed_reason, expires_at, channel, "
                    "code) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        event.event_id,
                        event.visit_id,
                        member,
                        event.campaign,
                        gw.store,
                        gw.gateway,
                        event.ts,
                        event.detected_at,
                        now_s,
                        prepared.state,
                        delivery.shopper if delivery else None,
                        delivery.topic if delivery else None,
                        delivery.payload if delivery else None,
                        refusal,
                        prepared.expires_at,
                        delivery.channel if delivery else "mqtt",
                        prepared.code,
                    ),
                )
                new_offers.append(event)
                if prepared.holdout:
                    holdout += 1
                elif delivery:
                    deliveries.append(delivery)
                elif refusal is not None:
                    refused_offers[refusal] = refused_offers.get(refusal, 0) + 1
            if visitors:
                await update_members(db, visitors, now_s, self.segment_policy)
            await db.commit()
        except sqlite3.Error as exc:
            await db.rollback()
            raise RecordsError(f"cannot record events in {self.path}: {exc}") from exc
        except BaseException:
            # Nothing half-recorded stays open on the shared connection for the next caller.
            await db.rollback()
            raise
        return RecordOutcome(
            acks,
            deliveries,
            new_visits,
            new_offers,
            duplicates,
            suppressed,
            unknown,
            clone_alerts,
            quarantined,
            refused_offers,
            new_ends,
            forged,
            holdout=holdout,
        )

    async def _set_aside(
        self, gw: wire.GatewayAddress, event: wire.Event, reason: str, now_s: float
    ) -> None:
        """Keep an event out of the records, in the quarantine table with why (for IT)."""
        await self._db.execute(
            "INSERT INTO quarantine (event_id, kind, store_id, gateway, ts, "
            "detected_at, reason, payload, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                event.event_id,
                event.KIND,
                gw.store,
                gw.gateway,
                _finite_or_none(event.ts),
                _finite_or_none(event.detected_at),
                reason,
                json.dumps(event.to_json()),
                now_s,
            ),
        )

    async def _record_end(
        self, gw: wire.GatewayAddress, end: wire.VisitEnd, member: str, device: str, now_s: float
    ) -> wire.VisitEnd | ForgeryReason | None:
        """Record a visit's end: the end, or why it is refused (set aside), or None if its visit
        had already ended. Its visit, if recorded, must be the same member's, device's and store's
        (cloud_bridge/core/admission.py); if not recorded yet, it is checked when it comes."""
        async with self._db.execute(
            "SELECT member_id, device_id, store_id FROM visits WHERE event_id = ?",
            (end.visit_id,),
        ) as cursor:
            row = await cursor.fetchone()
        visit = None if row is None else Visitor(row[0], row[1], row[2])
        refusal = check_visit_end_owner(Visitor(member, device, gw.store), visit)
        if refusal is not None:
            await self._set_aside(gw, end, refusal.value, now_s)
            return refusal
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO visit_ends (visit_id, event_id, member_id, device_id, "
            "store_id, gateway, entered_at, ended_at, duration_s, reason, platform, "
            "detected_at, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                end.visit_id,
                end.event_id,
                member,
                device,
                gw.store,
                gw.gateway,
                end.entered_at,
                end.ts,
                end.duration_s,
                end.reason,
                end.platform,
                end.detected_at,
                now_s,
            ),
        )
        return end if cursor.rowcount == 1 else None

    async def _unlink_foreign_end(self, visit: wire.Visit, owner: Visitor) -> bool:
        """A visit just recorded whose end came first: forget that end if it is another member's,
        device's or store's (forged); True if it was."""
        async with self._db.execute(
            "SELECT member_id, device_id, store_id FROM visit_ends WHERE visit_id = ?",
            (visit.event_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None or check_visit_end_owner(Visitor(row[0], row[1], row[2]), owner) is None:
            return False
        await self._db.execute("DELETE FROM visit_ends WHERE visit_id = ?", (visit.event_id,))
        _LOGGER.warning(
            "the end recorded for visit %s was another member's, device's or store's: forgotten "
            "(forged, or a gateway's bug)",
            visit.event_id,
        )
        return True

    async def _check_clone(
        self, store: str, visit: wire.Visit, member: str, device: str, now_s: float
    ) -> list[wire.CloneAlert]:
        """Alerts for a just-recorded visit that its device's nearest visits elsewhere cannot explain."""
        policy = self.clone_policy
        new = Sighting(
            visit.event_id, store, visit.ts, visit.detected_at, await self._location(store)
        )
        horizon_s = policy.horizon_s()
        async with self._db.execute(
            "SELECT v.event_id, v.store_id, v.ts, v.detected_at, s.latitude, s.longitude "
            "FROM visits v LEFT JOIN stores s ON s.id = v.store_id "
            "WHERE v.device_id = ? AND v.ts BETWEEN ? AND ? AND v.store_id != ?",
            (device, visit.ts - horizon_s, visit.ts + horizon_s, store),
        ) as cursor:
            others = [
                Sighting(r[0], r[1], r[2], r[3], _location_or_none(r[4], r[5]))
                async for r in cursor
            ]
        alerts = []
        for found in check_sighting(new, others, policy):
            a, b = found.earlier, found.later
            values = (
                device,
                member,
                found.reason,
                a.event_id,
                a.store,
                a.ts,
                b.event_id,
                b.store,
                b.ts,
                found.elapsed_s,
                found.distance_km,
                found.speed_kmh,
            )
            cursor = await self._db.execute(
                "INSERT OR IGNORE INTO clone_alerts (device_id, member_id, reason, "
                "first_event_id, first_store_id, first_ts, second_event_id, second_store_id, "
                "second_ts, elapsed_s, distance_km, speed_kmh, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, now_s),
            )
            if cursor.rowcount == 1 and cursor.lastrowid is not None:
                alerts.append(wire.CloneAlert(cursor.lastrowid, *values, "open", now_s))
        return alerts

    async def _location(self, store: str) -> GeoPoint | None:
        async with self._db.execute(
            "SELECT latitude, longitude FROM stores WHERE id = ?", (store,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _location_or_none(row[0], row[1])

    @_one_at_a_time
    async def clone_alerts(self, include_closed: bool = False) -> list[wire.CloneAlert]:
        """Open alerts (or every alert), oldest first."""
        where = "" if include_closed else "WHERE status = 'open' "
        async with self._db.execute(f"{ALERT_SELECT} {where}ORDER BY id") as cursor:
            return [alert_from_row(r) async for r in cursor]

    @_one_at_a_time
    async def clone_alert(self, alert_id: int) -> wire.CloneAlert | None:
        async with self._db.execute(f"{ALERT_SELECT} WHERE id = ?", (alert_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else alert_from_row(row)

    @_one_at_a_time
    async def close_clone_alert(
        self, alert_id: int, status: Literal["revoked", "dismissed"], now_s: float
    ) -> bool:
        """Mark an open alert revoked or dismissed; False if it is unknown or already closed."""
        cursor = await self._db.execute(
            "UPDATE clone_alerts SET status = ?, closed_at = ? WHERE id = ? AND status = 'open'",
            (status, now_s, alert_id),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def _consents(self, member: str) -> bool:
        async with self._db.execute(
            "SELECT 1 FROM members WHERE id = ? AND consent", (member,)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def _prepare_delivery(
        self, gw: wire.GatewayAddress, trigger: wire.OfferTrigger, member: str, now_s: float
    ) -> _Prepared:
        """The offer for the shopper's app and when it expires, or None and why it must not go
        (or that the member is in the campaign's holdout).

        The rules are cloud_bridge/core/admission.py's; this gathers the facts they need.
        """
        async with self._db.execute(
            "SELECT id, store_id, active, tiers, cooldown_s, validity_s, title, body, "
            "promotion_type, interests, status, updated_at, image_url, deep_link, code, "
            "per_member_day, per_member_week, holdout_pct FROM campaigns WHERE id = ?",
            (trigger.campaign,),
        ) as cursor:
            c = await cursor.fetchone()
        async with self._db.execute(
            "SELECT tier, consent, shopper_token FROM members WHERE id = ?", (member,)
        ) as cursor:
            m = await cursor.fetchone()
        campaign = (
            None
            if c is None
            else CampaignFacts(
                c[0],
                c[1],
                # A trigger decided before a pause or archiving is honoured (campaign_caps.py).
                decided_while_active(
                    bool(c[2]) and c[10] == "active",
                    None if c[11] is None else float(c[11]),
                    c[10] in ("paused", "archived"),
                    trigger.ts,
                ),
                tuple(c[3].split(",")),
                c[4],
                c[5],
                promotion_type=c[8] or None,
                interests=split_terms(c[9]),
                # Its stores and store tags: a gateway of a store it does not run at never had
                # it in its sync (a forged or replayed trigger).
                at_store=await self._campaign_targets_store(trigger.campaign, gw.store),
            )
        )
        member_cooldown_s = float(
            await self.setting("member_cooldown_s", str(DEFAULT_MEMBER_COOLDOWN_S))
        )
        # The member's preferences now, not as the gateway's roster had them.
        stated = await read_member_prefs(self._db, member)
        vocabulary = await read_vocabulary(self._db) if stated is not None else Vocabulary(())
        facts = OfferFacts(
            store=gw.store,
            ts=trigger.ts,
            campaign=campaign,
            member=None if m is None else MemberFacts(m[0], bool(m[1])),
            member_cooldown_s=member_cooldown_s,
            # Both cooldowns hold across the chain, and beyond the gateways' retention: the
            # nearest offer to this member (by radio time, either side: a gateway may upload
            # late) that was not itself suppressed.
            same_campaign_gap_s=None
            if campaign is None
            else await self._nearest_offer_gap(
                member, trigger.ts, campaign.cooldown_s, trigger.campaign
            ),
            any_offer_gap_s=await self._nearest_offer_gap(member, trigger.ts, member_cooldown_s),
            prefs=None if stated is None else stated.roster_prefs(vocabulary),
            interest_bits=vocabulary.bits("interest"),
            promotion_bits=vocabulary.bits("promotion"),
            other_offer_ts=() if stated is None else await self._offers_near(member, trigger.ts),
            issued_at=now_s,
            other_issued_at=() if stated is None else await self._offers_issued_near(member, now_s),
        )
        refusal = check_offer(facts)
        if refusal is not None:
            return _Prepared(None, refusal.value)
        assert c is not None and m is not None  # check_offer refuses unknown ones
        # Issue 11: the campaign's caps across stores, its holdout, its content and code.
        content = await self._campaign_content(gw.store, trigger, member, c)
        if isinstance(content, CampaignRefusal):
            return _Prepared(None, content.value)
        if content is None:
            return _Prepared(None, None, holdout=True)
        expires_at = offer_expires_at(now_s, float(c[5]))
        token = str(m[2])
        offer = wire.ShopperOffer(
            offer_id=trigger.event_id,
            campaign=trigger.campaign,
            title=c[6],
            body=c[7],
            store=gw.store,
            issued_at=now_s,
            detected_at=trigger.detected_at,
            # What the offer is, so the app can file it and judge it against what it stated.
            promotion_type=campaign.promotion_type if campaign else None,
            interests=campaign.interests if campaign else (),
            image_url=content.image_url,
            deep_link=content.deep_link,
            code=content.code,
            valid_until=expires_at,
        )
        delivery = Delivery(
            trigger.event_id,
            token,
            wire.shopper_offer_topic(gw.chain, token),
            wire.encode(offer),
            channel=self.channel_for(await self._visit_platform(trigger.visit_id)),
        )
        return _Prepared(delivery, None, expires_at, code=content.code)

    async def _campaign_content(
        self, store: str, trigger: wire.OfferTrigger, member: str, c: sqlite3.Row | tuple[Any, ...]
    ) -> _Content | CampaignRefusal | None:
        """For an offer admission.py admits (issue 11): why the campaign still refuses it (its caps
        across stores, a pool without a free code), None if the member is in its holdout, else what
        the offer carries, its code given out now (in the caller's transaction).

        `c` is `_prepare_delivery`'s campaigns row: image_url, deep_link, code, per_member_day,
        per_member_week, holdout_pct at 12..17.
        """
        campaign = trigger.campaign
        caps = CampaignCaps(
            None if c[15] is None else int(c[15]), None if c[16] is None else int(c[16])
        )
        if caps != CampaignCaps():
            day = local_day_bounds(trigger.ts, await self._store_zone(store))
            since, until = min(day[0], trigger.ts - WEEK_S), max(day[1], trigger.ts + WEEK_S)
            async with self._db.execute(
                f"SELECT ts FROM offers WHERE member_id = ? AND campaign_id = ? "
                f"AND {_MAY_HAVE_REACHED} AND ts > ? AND ts < ?",
                (member, campaign, since, until),
            ) as cursor:
                others = [float(r[0]) async for r in cursor]
            if over_campaign_cap(caps, trigger.ts, day, others):
                return CampaignRefusal.CAMPAIGN_CAP
        # On the records' member id: the same group at every store (core/holdout.py).
        if in_holdout(campaign, member, float(c[17] or 0.0)):
            return None
        code = await self._give_code(campaign, c[14], trigger.event_id)
        if isinstance(code, CampaignRefusal):
            return code
        return _Content(
            self._checked_url(campaign, "image_url", c[12]),
            self._checked_url(campaign, "deep_link", c[13]),
            code,
        )

    async def _give_code(
        self, campaign: str, shared: str | None, offer_id: str
    ) -> str | CampaignRefusal | None:
        """The code an offer of `campaign` carries: its one code, or the next free one of its pool
        (now marked given to `offer_id`); None if it has neither; CODES_EXHAUSTED if its pool is
        all given out."""
        if shared:
            return self._checked_code(campaign, shared)
        async with self._db.execute(
            "SELECT code FROM campaign_codes WHERE campaign_id = ? AND offer_id IS NULL "
            "ORDER BY added_at, code LIMIT 1",
            (campaign,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            async with self._db.execute(
                "SELECT 1 FROM campaign_codes WHERE campaign_id = ? LIMIT 1", (campaign,)
            ) as cursor:
                pool = await cursor.fetchone() is not None
            if not pool:
                return None
            self._bad_rows.warning(
                f"codes exhausted {campaign}",
                "campaign %r has given out every code of its pool: its offers are suppressed "
                "(codes_exhausted) until codes are added to it",
                campaign,
            )
            return CampaignRefusal.CODES_EXHAUSTED
        code = self._checked_code(campaign, str(row[0]))
        if isinstance(code, CampaignRefusal):
            return code
        await self._db.execute(
            "UPDATE campaign_codes SET offer_id = ? WHERE code = ? AND offer_id IS NULL",
            (offer_id, code),
        )
        return code

    def _checked_code(self, campaign: str, code: str) -> str | CampaignRefusal:
        """A stored code as the app and the till can read it; a row edited by hand into something
        else is never sent (the offer is suppressed, logged once per campaign)."""
        try:
            return msgspec.convert(code, wire.RedemptionCode)
        except msgspec.ValidationError:
            self._bad_rows.warning(
                f"bad code {campaign}",
                "campaign %r in %s has a code that is not 1-64 letters, digits, '-' or '_': its "
                "offers are suppressed (invalid_code) until the code is fixed",
                campaign,
                self.path,
            )
            return CampaignRefusal.INVALID_CODE

    def _checked_url(self, campaign: str, column: str, value: str | None) -> str | None:
        """A stored image_url or deep_link as the wire takes it; one edited by hand into something
        else is left out of the offer (logged once per campaign and column)."""
        if not value:
            return None
        try:
            return msgspec.convert(value, wire.Url)
        except msgspec.ValidationError as exc:
            self._bad_rows.warning(
                f"bad {column} {campaign}",
                "campaign %r in %s: %s is left out of its offers (%s); fix the row",
                campaign,
                self.path,
                column,
                exc,
            )
            return None

    async def _store_zone(self, store: str) -> tzinfo:
        """The store's time zone (stores.timezone); UTC, logged once, if it is not one."""
        async with self._db.execute("SELECT timezone FROM stores WHERE id = ?", (store,)) as cursor:
            row = await cursor.fetchone()
        name = "UTC" if row is None else str(row[0])
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self._bad_rows.warning(
                f"bad timezone {store}",
                "store %r in %s has time zone %r, which is not an IANA zone: its local days are "
                "counted in UTC until it is fixed",
                store,
                self.path,
                name,
            )
            return UTC

    async def _visit_platform(self, visit_id: str) -> str | None:
        """How the visit's member was heard (android, ios, tag), None if unknown."""
        async with self._db.execute(
            "SELECT platform FROM visits WHERE event_id = ?", (visit_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None or row[0] is None else str(row[0])

    async def _offers_near(self, member: str, ts: float) -> tuple[float, ...]:
        """Radio times of the member's offers that may have reached them (not suppressed, or
        suppressed only after being handed to the broker) within a week either side of `ts`, at
        every store: what their caps count (a late upload may land before later offers)."""
        async with self._db.execute(
            f"SELECT ts FROM offers WHERE member_id = ? AND {_MAY_HAVE_REACHED} "
            "AND ts > ? AND ts < ?",
            (member, ts - WEEK_S, ts + WEEK_S),
        ) as cursor:
            return tuple([float(r[0]) async for r in cursor])

    async def _offers_issued_near(self, member: str, now_s: float) -> tuple[float, ...]:
        """When the bridge recorded (and so issued) the member's offers that may have reached them
        within a week either side of `now_s`, at every store: the caps count what the shopper
        receives too."""
        async with self._db.execute(
            f"SELECT recorded_at FROM offers WHERE member_id = ? AND {_MAY_HAVE_REACHED} "
            "AND recorded_at > ? AND recorded_at < ?",
            (member, now_s - WEEK_S, now_s + WEEK_S),
        ) as cursor:
            return tuple([float(r[0]) async for r in cursor])

    async def _nearest_offer_gap(
        self, member: str, ts: float, within_s: float, campaign: str | None = None
    ) -> float | None:
        """|Δts| to the member's nearest unsuppressed offer (of `campaign`) within `within_s`."""
        if not within_s > 0:
            return None
        where = "AND campaign_id = ? " if campaign is not None else ""
        params: tuple[object, ...] = (ts, member, *((campaign,) if campaign else ()))
        async with self._db.execute(
            f"SELECT min(abs(ts - ?)) FROM offers WHERE member_id = ? {where}"
            "AND delivery != 'suppressed' AND ts > ? AND ts < ?",
            (*params, ts - within_s, ts + within_s),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @_one_at_a_time
    async def due_deliveries(
        self, now_s: float, resend_after_s: float, limit: int
    ) -> list[Delivery]:
        """Offers never handed to the broker, and those sent but unconfirmed for resend_after_s;
        only while they are valid (expire_offers records the others)."""
        async with self._db.execute(
            "SELECT event_id, shopper_token, delivery_topic, delivery_payload FROM offers "
            "WHERE (delivery = 'pending' OR (delivery = 'sent' AND sent_at <= ?)) "
            "AND expires_at > ? AND channel = 'mqtt' "
            # A row damaged on disk or edited by hand cannot be sent: left to expire_offers.
            "AND typeof(delivery_payload) = 'blob' AND typeof(delivery_topic) = 'text' "
            "AND typeof(shopper_token) = 'text' ORDER BY recorded_at LIMIT ?",
            (now_s - resend_after_s, now_s, limit),
        ) as cursor:
            return [Delivery(r[0], r[1], r[2], bytes(r[3])) async for r in cursor]

    @_one_at_a_time
    async def expire_offers(self, now_s: float) -> int:
        """Record as expired every offer the app has not confirmed by its expiry; how many."""
        cursor = await self._db.execute(
            # A pending webhook offer goes dead instead, with its last error (the webhook
            # loop's expire_webhooks).
            "UPDATE offers SET delivery = 'expired' WHERE expires_at <= ? "
            "AND (delivery = 'sent' OR (delivery = 'pending' AND channel = 'mqtt'))",
            (now_s,),
        )
        await self._db.commit()
        return cursor.rowcount

    @_one_at_a_time
    async def quarantined(self, limit: int = 1000) -> list[QuarantinedEvent]:
        """Events kept out of the records for their times, newest first."""
        async with self._db.execute(
            "SELECT event_id, kind, store_id, gateway, ts, detected_at, reason, payload, "
            "received_at FROM quarantine ORDER BY received_at DESC, event_id LIMIT ?",
            (limit,),
        ) as cursor:
            return [QuarantinedEvent(*r) async for r in cursor]

    @_one_at_a_time
    async def mark_sent(self, offer_ids: list[str], now_s: float) -> None:
        await self._db.executemany(
            "UPDATE offers SET delivery = 'sent', sent_at = ?, attempts = attempts + 1 "
            "WHERE event_id = ? AND delivery IN ('pending', 'sent')",
            [(now_s, i) for i in offer_ids],
        )
        await self._db.commit()

    @_one_at_a_time
    async def mark_received(
        self, shopper: str, offer_ids: list[str], now_s: float, status: str = "received"
    ) -> int:
        """Record the app's receipt (received, opened or dismissed: RECEIPT_UPDATE); only the
        shopper the offer was for can confirm it. How many offers it changed."""
        cursor = await self._db.executemany(
            RECEIPT_UPDATE + " AND shopper_token = :shopper",
            [{"now": now_s, "status": status, "id": i, "shopper": shopper} for i in offer_ids],
        )
        await self._db.commit()
        return cursor.rowcount

    @_one_at_a_time
    async def add_store(self, store: str, name: str, location: GeoPoint | None = None) -> bool:
        """Add a store (where it is, if known); return False if it was already there."""
        lat, lon = (location.lat, location.lon) if location else (None, None)
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO stores (id, name, latitude, longitude) VALUES (?, ?, ?, ?)",
            (store, name, lat, lon),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    @_one_at_a_time
    async def set_store_location(self, store: str, location: GeoPoint | None) -> bool:
        """Set (or, with None, forget) where a store is; False if the store is unknown."""
        lat, lon = (location.lat, location.lon) if location else (None, None)
        cursor = await self._db.execute(
            "UPDATE stores SET latitude = ?, longitude = ? WHERE id = ?", (lat, lon, store)
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def store_location(self, store: str) -> GeoPoint | None:
        """Where a store is, or None if unknown (or the store is not there)."""
        return await self._location(store)

    @_one_at_a_time
    async def add_gateway(
        self, store: str, gateway: str, public_key: bytes, now_s: float
    ) -> Literal["added", "replaced", "unchanged"]:
        """Register (or re-key) a gateway of `store`; RecordsError if the store is unknown. A new
        gateway takes a share of the daily budgets of the campaigns at its store: the stores whose
        sync that changes get a new campaigns version, in the same transaction."""
        if len(public_key) != 32:
            raise ValueError(f"a gateway public key is 32 bytes, got {len(public_key)}")
        async with self._db.execute(
            "SELECT public_key FROM gateways WHERE store_id = ? AND id = ?", (store, gateway)
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None and bytes(row[0]) == public_key:
            return "unchanged"
        try:
            await self._begin_write()
            before = await self._sync_contents()
            await self._db.execute(
                "INSERT INTO gateways (store_id, id, public_key, added_at) VALUES (?,?,?,?) "
                "ON CONFLICT (store_id, id) DO UPDATE SET public_key = excluded.public_key, "
                "added_at = excluded.added_at",
                (store, gateway, public_key, now_s),
            )
            await self._bump_changed(before)
            await self._db.commit()
        except sqlite3.IntegrityError:
            await self._db.rollback()
            raise RecordsError(
                f"store {store!r} is not in {self.path}: add it first (`cloud-bridge add-store`)"
            ) from None
        except BaseException:
            await self._db.rollback()
            raise
        return "added" if row is None else "replaced"

    @_one_at_a_time
    async def remove_gateway(self, store: str, gateway: str) -> bool:
        """Forget a gateway: the bridge stops sealing rosters to it, and its budget shares go to
        the others (their stores get a new campaigns version). False if it was not there."""
        try:
            await self._begin_write()
            before = await self._sync_contents()
            cursor = await self._db.execute(
                "DELETE FROM gateways WHERE store_id = ? AND id = ?", (store, gateway)
            )
            await self._bump_changed(before)
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        return cursor.rowcount == 1

    @_one_at_a_time
    async def gateways(self) -> list[RegisteredGateway]:
        """Every registered gateway, by store and id."""
        async with self._db.execute(
            "SELECT store_id, id, public_key FROM gateways ORDER BY store_id, id"
        ) as cursor:
            return [RegisteredGateway(r[0], r[1], bytes(r[2])) async for r in cursor]

    @_one_at_a_time
    async def stores(self) -> list[str]:
        async with self._db.execute("SELECT id FROM stores ORDER BY id") as cursor:
            return [r[0] async for r in cursor]

    @_one_at_a_time
    async def roster(self, store: str) -> wire.RosterSync:
        """Every active device of a consenting member (every store sees the whole chain's roster)."""
        version = await self._store_version(store, "roster_version")
        return wire.RosterSync(store=store, version=version, devices=await self._roster_devices())

    @_one_at_a_time
    async def rosters(self) -> list[wire.RosterSync]:
        """Every store's roster, by store: the chain's devices read once for them all (they are
        the same), each store at its own version. The versions are read first: a change that
        lands in between is in the devices already, and moves the versions again for the next."""
        async with self._db.execute("SELECT id, roster_version FROM stores ORDER BY id") as cursor:
            versions = [(str(r[0]), int(r[1])) async for r in cursor]
        if not versions:
            return []
        devices = await self._roster_devices()
        return [wire.RosterSync(store=s, version=v, devices=devices) for s, v in versions]

    async def _roster_devices(self) -> tuple[wire.RosterDevice, ...]:
        vocabulary = await read_vocabulary(self._db)
        async with self._db.execute(
            "SELECT d.id, d.member_id, m.tier, d.identity_key, d.exponent, d.sealed_key, d.kind, "
            "p.interests, p.promotions, p.per_day, p.per_week, p.updated_at, "
            "a.segments, a.visits "
            "FROM devices d JOIN members m ON m.id = d.member_id "
            "LEFT JOIN member_prefs p ON p.member_id = d.member_id "
            "LEFT JOIN member_audience a ON a.member_id = d.member_id "
            "WHERE d.active AND m.consent ORDER BY d.id"
        ) as cursor:
            rows = [r async for r in cursor]
        return tuple(
            wire.RosterDevice(
                r[0],
                r[1],
                r[2],
                self.open_identity_key(r[0], bytes(r[3]), None if r[5] is None else bytes(r[5])),
                r[4],
                kind=r[6] if r[6] in ("app", "tag") else None,
                # A member's preferences ride on each of their devices, as masks: no term names.
                prefs=None
                if r[9] is None
                else _prefs_from_row(r[1], r[7:12]).roster_prefs(vocabulary),
                # Their audience as last computed (never heard: new, no visits).
                segments=NO_VISITS.segments if r[12] is None else int(r[12]),
                visits=NO_VISITS.visits if r[13] is None else int(r[13]),
            )
            for r in rows
        )

    @_one_at_a_time
    async def refresh_audience(self, now_s: float, every_s: float = AUDIENCE_REFRESH_S) -> int:
        """Recompute every member's segments and visits if the last run is `every_s` old (time
        alone moves them: a regular lapses); how many changed (their rosters move on). Kept in
        memory, not in settings: a settings change re-signs every store's campaigns."""
        if self._audience_as_of is not None and 0 <= now_s - self._audience_as_of < every_s:
            return 0
        try:
            changed = await refresh_audience(self._db, now_s, self.segment_policy)
        except sqlite3.Error as exc:
            raise RecordsError(f"cannot recompute members' segments in {self.path}: {exc}") from exc
        self._audience_as_of = now_s
        if changed:
            _LOGGER.info("segments or visits changed for %d member(s): rosters move on", changed)
        return changed

    @_one_at_a_time
    async def campaigns(self, store: str) -> wire.CampaignSync:
        """The store's campaign sync: the active campaigns that target it, their schedules in
        its time zone, its gateways' shares of their daily budgets."""
        version = await self._store_version(store, "campaigns_version")
        timezone, campaigns = (await self._sync_contents(store)).get(store, ("UTC", ()))
        cooldown = await self.setting("member_cooldown_s", str(DEFAULT_MEMBER_COOLDOWN_S))
        vocabulary = await read_vocabulary(self._db)
        return wire.CampaignSync(
            store=store,
            version=version,
            member_cooldown_s=float(cooldown),
            campaigns=campaigns,
            # Term i is bit i of the rosters' masks; a retired term keeps its place.
            interest_terms=vocabulary.in_bit_order("interest"),
            promotion_terms=vocabulary.in_bit_order("promotion"),
            timezone=timezone,
        )

    async def _sync_contents(
        self, only: str | None = None
    ) -> dict[str, tuple[str, tuple[wire.CampaignSpec, ...]]]:
        """Every store's (or `only` that one's) time zone and campaigns as its sync carries them
        (no version): what a change compares to know whose sync it changed (`_bump_changed`)."""
        stores = await self._store_facts()
        gateways = await self._gateway_ids()
        async with self._db.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE active AND status = 'active' "
            "ORDER BY id"
        ) as cursor:
            rows = [r async for r in cursor]
        listed = await self._campaign_stores()
        tags = {store: facts.tags for store, facts in stores.items()}
        zones: dict[str, ZoneInfo | None] = {}
        for store, facts in stores.items():
            try:
                zones[store] = time_zone(facts.timezone)
            except InvalidCampaign as exc:
                zones[store] = None
                self._bad_rows.warning(
                    f"store {store} timezone",
                    "store %r in %s: %s; its scheduled campaigns are not published until "
                    "`cloud-bridge store set` fixes it",
                    store,
                    self.path,
                    exc,
                )
        specs: dict[str, list[wire.CampaignSpec]] = {
            store: [] for store in stores if only is None or store == only
        }
        for r in rows:
            try:
                definition = _definition_from_row(r, listed.get(r[0], ()))
                check_campaign_terms(definition)
            except InvalidCampaign as exc:
                self._bad_rows.warning(
                    f"campaign {r[0]} {exc.field}",
                    "campaign %r in %s is not published: %s; fix the row",
                    r[0],
                    self.path,
                    exc,
                )
                continue
            targets = targeted_stores(definition, tags)
            shared = [gw for gw in gateways if gw[0] in targets]
            for store in targets:
                zone = zones.get(store)
                if store not in specs or (zone is None and definition.schedule is not None):
                    continue
                specs[store].append(_campaign_spec(definition, zone, shared, store))
        return {
            store: (stores[store].timezone if zones[store] is not None else "UTC", tuple(found))
            for store, found in specs.items()
        }

    async def _begin_write(self) -> None:
        """Start the write transaction now, before reading what it compares: another process's
        change cannot land between the snapshot and the write (`_bump_changed`)."""
        if not self._db.in_transaction:
            await self._db.execute("BEGIN IMMEDIATE")

    async def _bump_changed(
        self,
        before: dict[str, tuple[str, tuple[wire.CampaignSpec, ...]]],
        field: str | None = None,
    ) -> list[str]:
        """Move campaigns_version of the stores whose sync differs from `before` (in the caller's
        transaction); which ones. With `field` (a marketer's change), InvalidCampaign naming it
        if a store's sync would grow past what a gateway accepts: every gateway refuses such a
        sync whole, so none of the store's campaign changes would reach it any more."""
        after = await self._sync_contents()
        moved = sorted(s for s in after if after[s] != before.get(s))
        await self._db.executemany(
            "UPDATE stores SET campaigns_version = campaigns_version + 1 WHERE id = ?",
            [(s,) for s in moved],
        )
        if field is not None and moved:
            await self._check_syncs_fit(field, {s: before.get(s) for s in moved}, after)
        return moved

    async def _check_syncs_fit(
        self,
        field: str,
        before: dict[str, tuple[str, tuple[wire.CampaignSpec, ...]] | None],
        after: dict[str, tuple[str, tuple[wire.CampaignSpec, ...]]],
    ) -> None:
        """InvalidCampaign naming `field` if a store's sync grew past what a gateway accepts (one
        already too big, from a hand edit, may shrink: that is the way out)."""
        cooldown = float(await self.setting("member_cooldown_s", str(DEFAULT_MEMBER_COOLDOWN_S)))
        vocabulary = await read_vocabulary(self._db)
        blank = wire.CampaignSync(
            store="",
            version=await self._store_version(next(iter(before)), "campaigns_version"),
            member_cooldown_s=cooldown,
            campaigns=(),
            interest_terms=vocabulary.in_bit_order("interest"),
            promotion_terms=vocabulary.in_bit_order("promotion"),
        )

        def measure(store: str, contents: tuple[str, tuple[wire.CampaignSpec, ...]]) -> int:
            zone, specs = contents
            sync = dataclasses.replace(blank, store=store, timezone=zone, campaigns=specs)
            return len(wire.encode(sync))

        for store, was in before.items():
            count, size = len(after[store][1]), measure(store, after[store])
            if count <= MAX_SYNC_CAMPAIGNS and size <= wire.MAX_PAYLOAD_BYTES:
                continue
            if was is not None and count <= len(was[1]) and size <= measure(store, was):
                continue
            raise InvalidCampaign(
                field,
                f"store {store!r} would have {count} active campaigns in {size} bytes, more "
                f"than its gateways accept ({MAX_SYNC_CAMPAIGNS} in {wire.MAX_PAYLOAD_BYTES} "
                "bytes): shorten titles and bodies, target fewer stores, or pause or archive a "
                "campaign there",
            )

    async def _store_facts(self) -> dict[str, StoreFacts]:
        async with self._db.execute("SELECT store_id, tag FROM store_tags ORDER BY tag") as cursor:
            tags: dict[str, list[str]] = {}
            async for store, tag in cursor:
                tags.setdefault(store, []).append(tag)
        async with self._db.execute(
            "SELECT s.id, s.name, s.timezone, s.latitude, s.longitude, "
            "(SELECT count(*) FROM gateways g WHERE g.store_id = s.id) FROM stores s ORDER BY id"
        ) as cursor:
            return {
                r[0]: StoreFacts(
                    r[0],
                    r[1],
                    r[2],
                    tuple(tags.get(r[0], ())),
                    _location_or_none(r[3], r[4]),
                    int(r[5]),
                )
                async for r in cursor
            }

    async def _gateway_ids(self) -> list[tuple[str, str]]:
        async with self._db.execute(
            "SELECT store_id, id FROM gateways ORDER BY store_id, id"
        ) as cursor:
            return [(r[0], r[1]) async for r in cursor]

    async def _campaign_stores(self, campaign_id: str | None = None) -> dict[str, tuple[str, ...]]:
        where, params = ("WHERE campaign_id = ? ", (campaign_id,)) if campaign_id else ("", ())
        found: dict[str, list[str]] = {}
        async with self._db.execute(
            f"SELECT campaign_id, store_id FROM campaign_stores {where}ORDER BY store_id", params
        ) as cursor:
            async for campaign, store in cursor:
                found.setdefault(campaign, []).append(store)
        return {campaign: tuple(stores) for campaign, stores in found.items()}

    async def _campaign_targets_store(self, campaign_id: str, store: str) -> bool | None:
        """Whether a campaign (of any status) runs at `store`: named, tagged, or every store;
        None if there is no such campaign. Unlocked: for use inside `record()`'s transaction."""
        async with self._db.execute(
            "SELECT c.store_id, c.store_tags, "
            "EXISTS (SELECT 1 FROM campaign_stores t WHERE t.campaign_id = c.id), "
            "EXISTS (SELECT 1 FROM campaign_stores t WHERE t.campaign_id = c.id "
            "AND t.store_id = ?) FROM campaigns c WHERE c.id = ?",
            (store, campaign_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        if row[0] is not None:
            return bool(row[0] == store)
        tags = split_terms(row[1])
        if bool(row[3]) or (not row[2] and not tags):
            return True
        if not tags:
            return False
        async with self._db.execute(
            f"SELECT 1 FROM store_tags WHERE store_id = ? AND tag IN ({','.join('?' * len(tags))})",
            (store, *tags),
        ) as cursor:
            return await cursor.fetchone() is not None

    @_one_at_a_time
    async def campaign_targets_store(self, campaign_id: str, store: str) -> bool | None:
        """`_campaign_targets_store`, alone on the connection."""
        return await self._campaign_targets_store(campaign_id, store)

    # --- stores: time zones and tags (issue 11) -------------------------------------------------

    @_one_at_a_time
    async def store_list(self) -> list[StoreFacts]:
        """Every store with its time zone, tags, location and number of gateways, by id."""
        return list((await self._store_facts()).values())

    @_one_at_a_time
    async def store_facts(self, store: str) -> StoreFacts | None:
        """One store's time zone, tags, location and gateways; None if there is no such store."""
        return (await self._store_facts()).get(store)

    @_one_at_a_time
    async def store_timezone(self, store: str) -> str | None:
        """The store's IANA time zone name ("UTC" unless set); None if there is no such store."""
        async with self._db.execute("SELECT timezone FROM stores WHERE id = ?", (store,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    @_one_at_a_time
    async def set_store(
        self, store: str, timezone: str | None = None, tags: tuple[str, ...] | None = None
    ) -> StoreFacts:
        """Set a store's time zone and/or tags (each None: kept) in one transaction; the stores
        whose campaign sync changes (schedules in the zone, campaigns by tag, budget shares) get
        a new version. InvalidCampaign naming the field (nothing written) if refused."""
        if timezone is not None:
            time_zone(timezone)
        if tags is not None:
            check_store_tags(tags)
        if await self._store_version_or_none(store) is None:
            raise UnknownStore(
                "store",
                f"store {store!r} is not in {self.path}; add it first "
                f"(`cloud-bridge add-store {self.path} {store}`)",
            )
        try:
            await self._begin_write()
            before = await self._sync_contents()
            if timezone is not None:
                await self._db.execute(
                    "UPDATE stores SET timezone = ? WHERE id = ?", (timezone, store)
                )
            if tags is not None:
                await self._db.execute("DELETE FROM store_tags WHERE store_id = ?", (store,))
                await self._db.executemany(
                    "INSERT INTO store_tags (store_id, tag) VALUES (?, ?)",
                    [(store, tag) for tag in tags],
                )
            await self._bump_changed(before, field="tags" if tags is not None else "timezone")
            await self._db.commit()
        except sqlite3.Error as exc:
            await self._db.rollback()
            raise RecordsError(f"cannot change store {store!r} in {self.path}: {exc}") from exc
        except BaseException:
            await self._db.rollback()
            raise
        return (await self._store_facts())[store]

    async def set_store_timezone(self, store: str, timezone: str) -> StoreFacts:
        """Set a store's IANA time zone (`set_store`)."""
        return await self.set_store(store, timezone=timezone)

    async def set_store_tags(self, store: str, tags: tuple[str, ...]) -> StoreFacts:
        """Replace a store's tags (`set_store`)."""
        return await self.set_store(store, tags=tags)

    async def _store_version_or_none(self, store: str) -> int | None:
        async with self._db.execute(
            "SELECT campaigns_version FROM stores WHERE id = ?", (store,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    # --- campaign management (issue 11) ---------------------------------------------------------

    @_one_at_a_time
    async def campaign_list(self) -> list[Campaign]:
        """Every campaign, archived ones too, by id."""
        async with self._db.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id"
        ) as cursor:
            rows = [r async for r in cursor]
        listed = await self._campaign_stores()
        return [self._campaign_from_row(r, listed.get(r[0], ())) for r in rows]

    @_one_at_a_time
    async def campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign as stored (any status); None if there is none by that id."""
        return await self._campaign(campaign_id)

    async def _campaign(self, campaign_id: str) -> Campaign | None:
        async with self._db.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        listed = await self._campaign_stores(campaign_id)
        return self._campaign_from_row(row, listed.get(campaign_id, ()))

    def _campaign_from_row(
        self, r: sqlite3.Row | tuple[Any, ...], stores: tuple[str, ...]
    ) -> Campaign:
        try:
            definition = _definition_from_row(r, stores)
        except InvalidCampaign as exc:
            raise RecordsError(
                f"{self.path}: campaign {r[0]!r} has a bad {exc.field}: {exc.problem}; fix the row"
            ) from None
        status: CampaignStatus = next((s for s in STATUSES if s == r[9]), "paused")
        return Campaign(definition, status, r[10], r[24], int(r[25]))

    async def _checked(
        self, definition: CampaignDefinition, now_s: float | None
    ) -> CampaignDefinition:
        """`definition` checked against the chain's vocabulary, stores and codes (InvalidCampaign)."""
        vocabulary = await read_vocabulary(self._db)
        # A database the bridge never ran on has no terms yet: it will sync the defaults unless
        # its config says otherwise ([preferences]).
        interests = vocabulary.accepted("interest") if vocabulary.terms else DEFAULT_INTERESTS
        promotions = (
            vocabulary.accepted("promotion") if vocabulary.terms else DEFAULT_PROMOTION_TYPES
        )
        check_campaign(definition, interests, promotions, now_s)
        known = set(await self._stores())
        for i, store in enumerate(definition.stores):
            if store not in known:
                raise InvalidCampaign(
                    f"stores[{i}]",
                    f"store {store!r} is not in {self.path}; add it first "
                    f"(`cloud-bridge add-store {self.path} {store}`)",
                )
        if definition.code is not None:
            await self._check_code_free(definition.code, "code", definition.id)
            async with self._db.execute(
                "SELECT count(*) FROM campaign_codes WHERE campaign_id = ?", (definition.id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is not None and row[0]:
                raise InvalidCampaign(
                    "code",
                    f"campaign {definition.id!r} gives codes from its pool of {row[0]}; one "
                    "code for everyone and a pool cannot both be",
                )
        return definition

    async def _check_code_free(self, code: str, field: str, campaign_id: str) -> None:
        """InvalidCampaign unless `code` is nobody else's: a till names only the code. Offers keep
        theirs, so a code another campaign's offers carry (it had it before) stays that campaign's."""
        async with self._db.execute(
            "SELECT campaign_id FROM campaign_codes WHERE code = ? UNION ALL "
            "SELECT id FROM campaigns WHERE code = ? AND id != ? UNION ALL "
            "SELECT * FROM (SELECT campaign_id FROM offers WHERE code = ? AND campaign_id != ? "
            "LIMIT 1)",
            (code, code, campaign_id, code, campaign_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            raise InvalidCampaign(
                field,
                f"code {code!r} is already used by campaign {row[0]!r}; codes are unique in the chain",
            )

    async def _stores(self) -> list[str]:
        async with self._db.execute("SELECT id FROM stores ORDER BY id") as cursor:
            return [r[0] async for r in cursor]

    async def _write_campaign(
        self,
        definition: CampaignDefinition,
        status: CampaignStatus,
        now_s: float,
        previous: Campaign | None,
        action: ChangeKind,
        source: ChangeSource,
    ) -> Campaign:
        """Insert (`previous` None) or replace one campaign and its stores in one transaction,
        with its next revision and that revision's history row, and move the campaigns_version
        of exactly the stores whose sync that changes (those it targets before or after; the
        campaigns triggers stay quiet for writes that set updated_at)."""
        d = definition
        new = previous is None
        revision = 1 if previous is None else previous.revision + 1
        if action in ("pause", "resume", "archive"):
            fields: tuple[str, ...] = (
                ("status",) if previous is None or previous.status != status else ()
            )
        else:
            fields = changed_fields(None if previous is None else previous.definition, d)
        values = (
            d.title,
            d.body,
            ",".join(d.tiers),
            d.cooldown_s,
            d.priority,
            d.validity_s,
            d.promotion_type,
            ",".join(d.interests),
            status,
            status == "active",
            now_s,
            d.image_url,
            d.deep_link,
            d.code,
            ",".join(d.store_tags),
            ",".join(d.segments),
            d.min_visits,
            d.max_visits,
            None if d.schedule is None else json.dumps(d.schedule.to_json()),
            d.per_member_day,
            d.per_member_week,
            d.daily_budget,
            float(d.holdout_pct),
            revision,
            d.id,
        )
        created_at: float | None = now_s
        try:
            await self._begin_write()
            before = await self._sync_contents()
            if new:
                await self._db.execute(
                    "INSERT INTO campaigns (title, body, tiers, cooldown_s, priority, validity_s, "
                    "promotion_type, interests, status, active, updated_at, image_url, deep_link, "
                    "code, store_tags, segments, min_visits, max_visits, schedule, "
                    "per_member_day, per_member_week, daily_budget, holdout_pct, revision, id, "
                    "created_at, store_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                    (*values, now_s),
                )
            else:
                await self._db.execute(
                    "UPDATE campaigns SET title = ?, body = ?, tiers = ?, cooldown_s = ?, "
                    "priority = ?, validity_s = ?, promotion_type = ?, interests = ?, status = ?, "
                    "active = ?, updated_at = ?, image_url = ?, deep_link = ?, code = ?, "
                    "store_tags = ?, segments = ?, min_visits = ?, max_visits = ?, schedule = ?, "
                    "per_member_day = ?, per_member_week = ?, daily_budget = ?, holdout_pct = ?, "
                    "revision = ?, store_id = NULL WHERE id = ?",
                    values,
                )
                await self._db.execute("DELETE FROM campaign_stores WHERE campaign_id = ?", (d.id,))
                async with self._db.execute(
                    "SELECT created_at FROM campaigns WHERE id = ?", (d.id,)
                ) as cursor:
                    row = await cursor.fetchone()
                created_at = None if row is None else row[0]
            await self._db.executemany(
                "INSERT INTO campaign_stores (campaign_id, store_id) VALUES (?, ?)",
                [(d.id, store) for store in d.stores],
            )
            await self._add_history(d.id, revision, now_s, action, fields, source)
            await self._bump_changed(before, field="campaign")
            await self._db.commit()
        except sqlite3.Error as exc:
            await self._db.rollback()
            raise RecordsError(f"cannot store campaign {d.id!r} in {self.path}: {exc}") from exc
        except BaseException:
            await self._db.rollback()
            raise
        return Campaign(d, status, now_s, created_at, revision)

    async def _add_history(
        self,
        campaign_id: str,
        revision: int,
        now_s: float,
        action: ChangeKind,
        fields: tuple[str, ...],
        source: ChangeSource,
    ) -> None:
        """Revision `revision`'s history row, in the caller's transaction."""
        await self._db.execute(
            "INSERT INTO campaign_changes (campaign_id, revision, changed_at, action, fields, "
            "source) VALUES (?, ?, ?, ?, ?, ?)",
            (campaign_id, revision, now_s, action, json.dumps(list(fields)), source),
        )

    @staticmethod
    def _check_revision(current: Campaign, if_revision: int | None) -> None:
        """StaleRevision if the caller built its change on another revision than the stored one."""
        if if_revision is not None and if_revision != current.revision:
            raise StaleRevision(current.definition.id, if_revision, current.revision)

    @_one_at_a_time
    async def campaign_history(self, campaign_id: str) -> list[CampaignRevision]:
        """A campaign's changes, oldest first (a campaign from before revisions has none for its
        revision 1); UnknownCampaign if there is none by that id. RecordsError naming a row that
        is not one the bridge writes (a hand edit)."""
        await self._existing(campaign_id)
        async with self._db.execute(
            "SELECT revision, changed_at, action, fields, source FROM campaign_changes "
            "WHERE campaign_id = ? ORDER BY revision",
            (campaign_id,),
        ) as cursor:
            rows = [r async for r in cursor]
        return [self._revision_from_row(campaign_id, r) for r in rows]

    def _revision_from_row(
        self, campaign_id: str, r: sqlite3.Row | tuple[Any, ...]
    ) -> CampaignRevision:
        where = f"{self.path}: campaign_changes row ({campaign_id!r}, revision {r[0]!r})"
        action = next((a for a in CHANGE_KINDS if a == r[2]), None)
        source = next((s for s in CHANGE_SOURCES if s == r[4]), None)
        try:
            fields = json.loads(r[3]) if isinstance(r[3], str) else None
        except ValueError:
            fields = None
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise RecordsError(f"{where}: fields is not a JSON list of names; fix the row")
        if action is None or source is None or not isinstance(r[1], int | float):
            raise RecordsError(f"{where}: bad action, source or changed_at; fix the row")
        return CampaignRevision(campaign_id, int(r[0]), float(r[1]), action, tuple(fields), source)

    async def _existing(self, campaign_id: str) -> Campaign:
        current = await self._campaign(campaign_id)
        if current is None:
            raise UnknownCampaign("id", f"no campaign {campaign_id!r} in {self.path}")
        return current

    async def _locked_for_write(self) -> None:
        """Take the write lock before reading what a change builds on (the campaign as stored,
        whether a code is free): another process (the CLI while the bridge serves the API)
        cannot change it in between, so no change is lost and no code is given twice. The
        caller ends the transaction: `_write_campaign` commits, `_release` rolls back."""
        await self._begin_write()

    async def _release(self) -> None:
        if self._db.in_transaction:
            await self._db.rollback()

    @_one_at_a_time
    async def create_campaign(
        self, definition: CampaignDefinition, now_s: float, *, source: ChangeSource = "cli"
    ) -> Campaign:
        """Add an active campaign at revision 1; InvalidCampaign (nothing written) if it is
        refused. `source`: what made the change, for its history."""
        try:
            await self._locked_for_write()
            await self._checked(definition, now_s)
            if await self._campaign(definition.id) is not None:
                raise CampaignExists("id", f"campaign {definition.id!r} already exists")
            return await self._write_campaign(definition, "active", now_s, None, "create", source)
        finally:
            await self._release()

    @_one_at_a_time
    async def update_campaign(
        self,
        campaign_id: str,
        change: CampaignChange,
        now_s: float,
        *,
        source: ChangeSource = "cli",
        if_revision: int | None = None,
    ) -> Campaign:
        """Change a campaign that is not archived (its next revision); InvalidCampaign (nothing
        written) if refused: UnknownCampaign if there is none, ArchivedCampaign if it is
        archived, StaleRevision if `if_revision` is given and is not the stored one."""
        try:
            await self._locked_for_write()
            current = await self._existing(campaign_id)
            self._check_revision(current, if_revision)
            if current.status == "archived":
                raise ArchivedCampaign("status", f"campaign {campaign_id!r} is archived: final")
            # A schedule given now must not have ended already; one kept as it was may have.
            schedule_set = change.schedule is not None
            definition = await self._checked(
                changed(current, change), now_s if schedule_set else None
            )
            return await self._write_campaign(
                definition, current.status, now_s, current, "update", source
            )
        finally:
            await self._release()

    @_one_at_a_time
    async def set_campaign_status(
        self,
        campaign_id: str,
        action: CampaignAction,
        now_s: float,
        *,
        source: ChangeSource = "cli",
        if_revision: int | None = None,
    ) -> Campaign:
        """Pause, resume or archive a campaign (its next revision); only an active one is in the
        gateways' sync. StaleRevision if `if_revision` is given and is not the stored one."""
        try:
            await self._locked_for_write()
            return await self._set_campaign_status(campaign_id, action, now_s, source, if_revision)
        finally:
            await self._release()

    async def _set_campaign_status(
        self,
        campaign_id: str,
        action: CampaignAction,
        now_s: float,
        source: ChangeSource,
        if_revision: int | None,
    ) -> Campaign:
        current = await self._existing(campaign_id)
        self._check_revision(current, if_revision)
        if current.status == "archived":
            raise ArchivedCampaign(
                "status",
                f"campaign {campaign_id!r} is archived: it cannot be "
                f"{'archived again' if action == 'archive' else action + 'd'}; create a new one",
            )
        status = next_status(current, action)
        return await self._write_campaign(
            current.definition, status, now_s, current, action, source
        )

    @_one_at_a_time
    async def add_campaign_codes(
        self,
        campaign_id: str,
        codes: Sequence[str],
        now_s: float,
        *,
        source: ChangeSource = "cli",
    ) -> CodeCounts:
        """Add codes to a campaign's pool (one per offer), all or none, as its next revision:
        InvalidCampaign naming the code (`codes[3]`) if one is not a code, is named twice or is
        already anyone's."""
        try:
            await self._locked_for_write()
            return await self._add_campaign_codes(campaign_id, codes, now_s, source)
        finally:
            await self._release()

    async def _add_campaign_codes(
        self, campaign_id: str, codes: Sequence[str], now_s: float, source: ChangeSource
    ) -> CodeCounts:
        current = await self._existing(campaign_id)
        if current.status == "archived":
            raise ArchivedCampaign("status", f"campaign {campaign_id!r} is archived: final")
        if current.definition.code is not None:
            raise InvalidCampaign(
                "codes",
                f"campaign {campaign_id!r} gives every shopper code {current.definition.code!r};"
                " clear it (`--clear code`) before adding a pool",
            )
        if not codes:
            raise InvalidCampaign("codes", "names no code")
        seen: dict[str, int] = {}
        for i, code in enumerate(codes):
            check_code(code, f"codes[{i}]")
            if code in seen:
                raise InvalidCampaign(
                    f"codes[{i}]", f"{code!r} is named twice (also codes[{seen[code]}])"
                )
            seen[code] = i
        for start in range(0, len(codes), 500):
            batch = list(codes[start : start + 500])
            marks = ",".join("?" * len(batch))
            # Nor a code offers carry: a campaign's shared code before it was changed.
            async with self._db.execute(
                f"SELECT code, campaign_id FROM campaign_codes WHERE code IN ({marks}) UNION ALL "
                f"SELECT code, id FROM campaigns WHERE code IN ({marks}) UNION ALL "
                f"SELECT * FROM (SELECT code, campaign_id FROM offers WHERE code IN ({marks}) "
                "LIMIT 1)",
                (*batch, *batch, *batch),
            ) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                raise InvalidCampaign(
                    f"codes[{seen[row[0]]}]",
                    f"code {row[0]!r} is already used by campaign {row[1]!r}; codes are unique in the chain",
                )
        try:
            await self._db.executemany(
                "INSERT INTO campaign_codes (code, campaign_id, offer_id, added_at) "
                "VALUES (?, ?, NULL, ?)",
                [(code, campaign_id, now_s) for code in codes],
            )
            # A new updated_at keeps the campaigns triggers quiet: a pool is not in the sync.
            revision = current.revision + 1
            await self._db.execute(
                "UPDATE campaigns SET revision = ?, updated_at = ? WHERE id = ?",
                (revision, now_s, campaign_id),
            )
            await self._add_history(campaign_id, revision, now_s, "codes", ("codes",), source)
            await self._db.commit()
        except sqlite3.Error as exc:
            await self._db.rollback()
            raise RecordsError(
                f"cannot add codes to {campaign_id!r} in {self.path}: {exc}"
            ) from exc
        return await self._code_counts(campaign_id)

    @_one_at_a_time
    async def campaign_code_counts(self, campaign_id: str) -> CodeCounts:
        """How many codes a campaign's pool has, has given out, has left; UnknownCampaign."""
        await self._existing(campaign_id)
        return await self._code_counts(campaign_id)

    async def _code_counts(self, campaign_id: str) -> CodeCounts:
        async with self._db.execute(
            "SELECT count(*), count(offer_id) FROM campaign_codes WHERE campaign_id = ?",
            (campaign_id,),
        ) as cursor:
            row = await cursor.fetchone()
        total, given = (0, 0) if row is None else (int(row[0]), int(row[1]))
        return CodeCounts(campaign_id, total, given)

    @_one_at_a_time
    async def vocabulary(self) -> Vocabulary:
        """The chain's preference terms: each one's bit, and which the API accepts."""
        return await read_vocabulary(self._db)

    @_one_at_a_time
    async def sync_preference_terms(
        self, interests: tuple[str, ...], promotion_types: tuple[str, ...]
    ) -> dict[str, VocabularyPlan]:
        """Make the stored vocabulary accept exactly these terms (the bridge config's
        `[preferences]`, at start): new terms get the next free bits, dropped ones are retired
        and keep theirs. What changed, by kind; RecordsError if a kind would exceed
        wire.MAX_PREFERENCE_TERMS terms in all."""
        try:
            stored = (await read_vocabulary(self._db)).terms
            plans = {
                kind: plan_vocabulary(stored, kind, configured)
                for kind, configured in zip(TERM_KINDS, (interests, promotion_types), strict=True)
            }
        except VocabularyError as exc:
            raise RecordsError(
                f"{self.path}: the bridge config's [{exc.field}] {exc.problem}"
            ) from None
        try:
            for kind, plan in plans.items():
                await self._db.executemany(
                    "INSERT INTO preference_terms (kind, name, bit, active) VALUES (?, ?, ?, 1)",
                    [(t.kind, t.name, t.bit) for t in plan.add],
                )
                for names, active in ((plan.retire, 0), (plan.revive, 1)):
                    await self._db.executemany(
                        "UPDATE preference_terms SET active = ? WHERE kind = ? AND name = ?",
                        [(active, kind, name) for name in names],
                    )
            await self._db.commit()
        except sqlite3.Error as exc:
            await self._db.rollback()
            raise RecordsError(f"cannot store the preference terms in {self.path}: {exc}") from exc
        for kind, plan in plans.items():
            if plan.changed:
                _LOGGER.info(
                    "%s terms: %d new%s%s",
                    kind,
                    len(plan.add),
                    f", retired {', '.join(plan.retire)}" if plan.retire else "",
                    f", back in use {', '.join(plan.revive)}" if plan.revive else "",
                )
        return {kind: plan for kind, plan in plans.items()}

    @_one_at_a_time
    async def redeem(self, claim: RedemptionClaim, now_s: float) -> Redemption:
        """Record a redemption from the till or the app (issue 11), linked to its offer; raise
        why not (core/redemptions.py's RedemptionError) with nothing written."""
        return await record_redemption(self._db, self.path, claim, now_s)

    async def setting(self, key: str, default: str) -> str:
        async with self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else default

    async def _store_version(self, store: str, column: str) -> int:
        async with self._db.execute(
            f"SELECT {column} FROM stores WHERE id = ?",
            (store,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise RecordsError(f"store {store!r} is not in {self.path}; add it to the stores table")
        return int(row[0])

    async def count(self, table: str) -> int:
        if table not in (
            "visits",
            "offers",
            "events",
            "members",
            "devices",
            "clone_alerts",
            "quarantine",
            "visit_ends",
        ):
            raise ValueError(table)
        async with self._db.execute(f"SELECT count(*) FROM {table}") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
