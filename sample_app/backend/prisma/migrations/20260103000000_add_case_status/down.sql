-- Down: undo 20260103000000_add_case_status
DROP MATERIALIZED VIEW "case_status_counts";
DROP INDEX "cases_status_idx";
ALTER TABLE "cases" DROP COLUMN "status";
