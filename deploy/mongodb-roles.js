// Least-privilege roles for order-archiver, one per purpose, and one user per process. Run as a
// user administrator:
//   mongosh "mongodb://admin@host/admin" --file deploy/mongodb-roles.js
// On Atlas, not this script: Atlas rolls back roles made with db.createRole; make the same roles
// in the Atlas UI or with `atlas customDbRoles create` (docs/deployment.md, "On Atlas").
// Edit the names below to match your settings (MONGODB_DATABASE, *_COLLECTION, ARCHIVE_*).
// With ARCHIVE_MONGODB_URI (the archive on another deployment), run it on each deployment
// with SIDE set: "source" grants only the source's privileges (find, changeStream,
// listCollections; the optional index, purge and restore roles), "archive" only the archive's.
// Which roles each command needs: docs/deployment.md (a test checks it against what each sends).
//
// Why several roles: the long-running watcher holds its credentials all the time, so it gets
// no createIndex, collMod, dropIndex nor remove on the archive (with createIndex or collMod,
// anyone holding them could make a TTL index that deletes the archive). Building the indexes and
// ARCHIVE_RETENTION's TTL index is batch --run's; the watcher's catch-up only checks them.
const SOURCE_DB = "livraison";
const ARCHIVE_DB = SOURCE_DB; // ARCHIVE_DATABASE, when the archive lives elsewhere
const ORDERS = "Commande";
const REFERENCES = ["Client", "Livreur", "Restaurants", "Menu"];
const ARCHIVE = "Commande_archive";
const CHECKPOINTS = "archiver_checkpoints";
const REJECTS = "archiver_rejects"; // REJECTS_COLLECTION
const FORGOTTEN = "archiver_forgotten"; // FORGOTTEN_COLLECTION: read before every archive write
const SIDE = "both"; // "source" or "archive" when ARCHIVE_MONGODB_URI puts the archive elsewhere
const CLUSTER_METADATA = "config"; // MongoDB's own: through mongos, the list of sharded collections

const admin = db.getSiblingDB("admin");

// Every command: read the source, follow its changes, read the archive and its lists.
admin.createRole({
  role: "orderArchiverRead",
  privileges: [
    ...(SIDE === "archive" ? [] : [
      // listIndexes: batch, status and doctor read which source indexes are ready or being built.
      { resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["find", "changeStream", "listIndexes"] },
      ...REFERENCES.map((name) => ({ resource: { db: SOURCE_DB, collection: name }, actions: ["find"] })),
      // listCollections: a misspelt ORDERS_COLLECTION is named instead of read as "0 orders".
      { resource: { db: SOURCE_DB, collection: "" }, actions: ["listCollections"] },
    ]),
    ...(SIDE === "source" ? [] : [
      // listIndexes: which indexes are ready or being built, ARCHIVE_RETENTION's TTL index.
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["find", "listIndexes"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["find"] },
      { resource: { db: ARCHIVE_DB, collection: REJECTS }, actions: ["find"] },
      // listIndexes: its partial indexes of the erasures a forget left unfinished.
      { resource: { db: ARCHIVE_DB, collection: FORGOTTEN }, actions: ["find", "listIndexes"] },
    ]),
    // Through mongos, which collections are sharded (config.collections), checked by every
    // command at start-up: a layout that cannot work is refused before anything is written.
    // Without it the check is skipped (a warning) and such a layout fails mid-run. Empty or
    // absent on a replica set: harmless there.
    { resource: { db: CLUSTER_METADATA, collection: "collections" }, actions: ["find"] },
  ],
  roles: [],
});

if (SIDE !== "source") {
  // watch: archive each delivery, save its resume token and lease, list rejected orders (its
  // catch-up prunes those fixed since). Never an index, a collMod nor a delete on the archive.
  admin.createRole({
    role: "orderArchiverWatch",
    privileges: [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["insert", "update"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["insert", "update"] },
      { resource: { db: ARCHIVE_DB, collection: REJECTS }, actions: ["insert", "update", "remove"] },
    ],
    roles: [],
  });

  // batch --run, verify --repair, retire-watcher: the watcher's writes, the archive's indexes
  // (createIndex: its unique index, which no write goes without), a retired watcher's token and
  // lease removed, the marks of cold orders restored removed once RESTORE_HOLD has passed
  // (--purge-source), ARCHIVE_PII_RETENTION's erasure (update).
  admin.createRole({
    role: "orderArchiverBatch",
    privileges: [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["insert", "update", "createIndex"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["insert", "update", "remove"] },
      { resource: { db: ARCHIVE_DB, collection: REJECTS }, actions: ["insert", "update", "remove"] },
      // Once: the persons an earlier version's forget erased, recorded (upgrade_erasures); the
      // marks of an erasure a forget left unfinished (in the archive; in the cold tier), cleared
      // once finished, and (createIndex) the partial indexes that find those marks.
      { resource: { db: ARCHIVE_DB, collection: FORGOTTEN }, actions: ["insert", "update", "createIndex"] },
    ],
    roles: [],
  });

  // Only with ARCHIVE_RETENTION, for the batch user: batch --run creates its TTL index (the
  // createIndex of orderArchiverBatch), changes its age in place (collMod), drops it once the
  // setting is unset (dropIndex), and deletes the archived orders without date_livraison whose
  // order date is past the retention (remove: no TTL index sees them).
  admin.createRole({
    role: "orderArchiverRetention",
    privileges: [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["collMod", "dropIndex", "remove"] },
    ],
    roles: [],
  });

  // Only with a cold tier (ARCHIVE_COLD_URL), for the batch user and the forget user: the
  // archived orders moved to the cold tier's files are then deleted from the archive (remove),
  // once the file is listed and read back (forget --run settles first a move killed between its
  // publication and its deletes). The files themselves are the cold store's (its folder, or S3
  // credentials).
  admin.createRole({
    role: "orderArchiverColdTier",
    privileges: [{ resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["remove"] }],
    roles: [],
  });

  // forget --run: a person's data erased from the archive (update), the person recorded as
  // forgotten so that no later write brings the data back (insert, update); with a cold tier,
  // each file rewritten under a journal entry and the list of files kept (the checkpoints).
  admin.createRole({
    role: "orderArchiverForget",
    privileges: [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["update"] },
      { resource: { db: ARCHIVE_DB, collection: FORGOTTEN }, actions: ["insert", "update"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["insert", "update", "remove"] },
    ],
    roles: [],
  });
}

if (SIDE !== "archive") {
  // Optional, for the batch user: the source indexes batch creates (status+date_commande,
  // status+_id, status+date_livraison, numero_commande). Without it batch warns once and continues.
  admin.createRole({
    role: "orderArchiverSourceIndexes",
    privileges: [{ resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["createIndex"] }],
    roles: [],
  });

  // Only for `batch --purge-source`: delete source orders once archived.
  admin.createRole({
    role: "orderArchiverPurge",
    privileges: [{ resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["remove"] }],
    roles: [],
  });
}

// restore --run (a support agent's occasional task): put archived orders back into the source
// (insert, never update or remove: an order the source holds already is left alone), and mark
// each restored order in the archive against the purge (update: restored_at, RESTORE_HOLD);
// one restored from the cold tier is marked in the checkpoints instead (insert, update, remove).
admin.createRole({
  role: "orderArchiverRestore",
  privileges: [
    ...(SIDE === "archive" ? [] : [
      { resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["insert"] },
    ]),
    ...(SIDE === "source" ? [] : [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["update"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["insert", "update", "remove"] },
    ]),
  ],
  roles: [],
});

// Only with --max-lag (BATCH_MAX_LAG), for the batch user (and the watcher's, whose catch-up it
// holds too): how far each secondary is behind (replSetGetStatus) and each member's configured
// delay (replSetGetConfig), actions on the cluster resource no collection role can hold. The
// built-in clusterMonitor role has both and more (serverStatus, listDatabases...): this one has
// only them. On each deployment (with ARCHIVE_MONGODB_URI both are watched).
admin.createRole({
  role: "orderArchiverReplicationLag",
  privileges: [{ resource: { cluster: true }, actions: ["replSetGetStatus", "replSetGetConfig"] }],
  roles: [],
});

// One user per process (each its own credentials: a Kubernetes Secret key, a systemd
// credential); passwordPrompt() keeps the passwords out of shell history.
// On a SIDE of its own, a role the other side holds does not exist there: leave it out.
const onArchive = (roles) => (SIDE === "source" ? [] : roles);
const onSource = (roles) => (SIDE === "archive" ? [] : roles);
admin.createUser({
  user: "order-archiver-watch",
  pwd: passwordPrompt(),
  roles: ["orderArchiverRead", ...onArchive(["orderArchiverWatch"])],
});
admin.createUser({
  user: "order-archiver-batch",
  pwd: passwordPrompt(),
  roles: ["orderArchiverRead", ...onArchive(["orderArchiverBatch"]), ...onSource(["orderArchiverSourceIndexes"])],
});
// With ARCHIVE_RETENTION, add "orderArchiverRetention" to order-archiver-batch's roles, and keep
// it after unsetting the setting until a batch --run has dropped the TTL index (doctor says so):
//   admin.grantRolesToUser("order-archiver-batch", ["orderArchiverRetention"]);
// With batch --purge-source: admin.grantRolesToUser("order-archiver-batch", ["orderArchiverPurge"]);
// With a cold tier (ARCHIVE_COLD_URL): admin.grantRolesToUser("order-archiver-batch", ["orderArchiverColdTier"]);
//   and admin.grantRolesToUser("order-archiver-forget", ["orderArchiverColdTier"]);
// With --max-lag (BATCH_MAX_LAG): admin.grantRolesToUser("order-archiver-batch", ["orderArchiverReplicationLag"]);
// (and to "order-archiver-watch" when its catch-up is held too: watch --max-lag)
// restore --run and forget --run, each its own user (a person's occasional task, not a service):
// admin.createUser({ user: "order-archiver-restore", pwd: passwordPrompt(), roles: ["orderArchiverRead", "orderArchiverRestore"] });
// admin.createUser({ user: "order-archiver-forget", pwd: passwordPrompt(), roles: ["orderArchiverRead", "orderArchiverForget"] });
// status, doctor, verify, rejects, and the dry runs read only:
// admin.createUser({ user: "order-archiver-read", pwd: passwordPrompt(), roles: ["orderArchiverRead"] });
