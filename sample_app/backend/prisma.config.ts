// Prisma 6.19 configuration of the sample backend, as in tests/fixtures/prisma/app: the JS schema engine with the
// pg driver adapter runs offline (no native engine download). It needs the @prisma/adapter-pg patch from
// tests/scripts/prisma_setup.py. Production projects usually use Prisma's default (native) engine instead.
//
// This project has no node_modules of its own (package.json pins no Prisma): `prisma/config` and
// `@prisma/adapter-pg` are found through NODE_PATH, which runbook.deploy's migrate role sets from
// migrate_node_modules (roles/migrate/README.md).
import { defineConfig } from 'prisma/config'
import { PrismaPg } from '@prisma/adapter-pg'

// The adapter ignores the URL's `schema` parameter (a Prisma-only one): read it and set the search_path.
function schemaOf(url: string | undefined): string | undefined {
  try {
    return new URL(url ?? '').searchParams.get('schema') ?? undefined
  } catch {
    return undefined
  }
}

export default defineConfig({
  schema: 'prisma/schema.prisma',
  experimental: { adapter: true },
  engine: 'js',
  async adapter() {
    const connectionString = process.env.DATABASE_URL
    const schema = schemaOf(connectionString)
    // A short idle timeout and allowExitOnIdle let the CLI exit as soon as it is done.
    return new PrismaPg(
      {
        connectionString,
        idleTimeoutMillis: 200,
        allowExitOnIdle: true,
        ...(schema ? { options: `-c search_path="${schema.replace(/"/g, '""')}"` } : {}),
      },
      schema ? { schema } : undefined,
    )
  },
})
