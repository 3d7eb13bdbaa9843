-- AlterTable
ALTER TABLE "cases" ADD COLUMN "status" TEXT NOT NULL DEFAULT 'open';

-- CreateIndex
CREATE INDEX "cases_status_idx" ON "cases"("status");

-- A reporting view (not modelled in schema.prisma). Its unique index lets the deployment refresh it with
-- REFRESH MATERIALIZED VIEW CONCURRENTLY (the migrate role's migrate_post_sql) without blocking readers.
CREATE MATERIALIZED VIEW "case_status_counts" AS SELECT "status", count(*)::integer AS "cases" FROM "cases" GROUP BY "status";

-- CreateIndex
CREATE UNIQUE INDEX "case_status_counts_status_key" ON "case_status_counts"("status");
