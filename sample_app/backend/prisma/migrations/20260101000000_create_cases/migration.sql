-- CreateTable
-- IF NOT EXISTS: databases prepared by playbooks/local_sample_app.yml already have this table (same columns,
-- same primary key name), and this migration then only records it.
-- (No semicolons in comments: the offline JS schema engine splits migration.sql on them.)
CREATE TABLE IF NOT EXISTS "cases" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "opened" TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "cases_pkey" PRIMARY KEY ("id")
);
