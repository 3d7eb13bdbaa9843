-- Down: undo 20260102000000_add_sync_queue_and_feature_flags
DROP TABLE "sync_queue";
DROP TABLE "feature_flags";
