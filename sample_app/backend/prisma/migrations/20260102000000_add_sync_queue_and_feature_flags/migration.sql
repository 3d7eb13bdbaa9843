-- CreateTable
CREATE TABLE "sync_queue" (
    "id" SERIAL NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "payload" JSONB,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "sync_queue_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "feature_flags" (
    "flag_name" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT false,
    "rollout_percentage" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "feature_flags_pkey" PRIMARY KEY ("flag_name")
);

-- CreateIndex
CREATE INDEX "sync_queue_status_idx" ON "sync_queue"("status");

-- Seed: the sync worker runs while auto_sync is on (the flags role turns it off during a deployment).
INSERT INTO "feature_flags" ("flag_name", "enabled", "rollout_percentage") VALUES ('auto_sync', true, 100)
ON CONFLICT ("flag_name") DO NOTHING;
