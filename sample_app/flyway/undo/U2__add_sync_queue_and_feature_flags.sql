-- Down: undo V2__add_sync_queue_and_feature_flags.sql
DROP TABLE "sync_queue";
DROP TABLE "feature_flags";
