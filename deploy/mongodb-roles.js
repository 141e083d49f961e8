// Least-privilege roles for order-archiver. Run as a user administrator:
//   mongosh "mongodb://admin@host/admin" --file deploy/mongodb-roles.js
// Edit the names below to match your settings (MONGODB_DATABASE, *_COLLECTION, ARCHIVE_*).
// With ARCHIVE_MONGODB_URI (the archive on another deployment), run it on each deployment
// with SIDE set: "source" grants only the source's privileges (find, changeStream,
// listCollections; the optional index, purge and restore roles), "archive" only the archive's.
// Which role each command needs: docs/deployment.md (a test checks it against what each sends).
const SOURCE_DB = "livraison";
const ARCHIVE_DB = SOURCE_DB; // ARCHIVE_DATABASE, when the archive lives elsewhere
const ORDERS = "Commande";
const REFERENCES = ["Client", "Livreur", "Restaurants", "Menu"];
const ARCHIVE = "Commande_archive";
const CHECKPOINTS = "archiver_checkpoints";
const REJECTS = "archiver_rejects"; // REJECTS_COLLECTION
const FORGOTTEN = "archiver_forgotten"; // FORGOTTEN_COLLECTION
const SIDE = "both"; // "source" or "archive" when ARCHIVE_MONGODB_URI puts the archive elsewhere

const admin = db.getSiblingDB("admin");

// batch and watch: read the source, follow its changes, write the archive and checkpoints.
admin.createRole({
  role: "orderArchiver",
  privileges: [
    ...(SIDE === "archive" ? [] : [
      // listIndexes: batch, status and doctor read which source indexes are ready or being built.
      { resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["find", "changeStream", "listIndexes"] },
      ...REFERENCES.map((name) => ({ resource: { db: SOURCE_DB, collection: name }, actions: ["find"] })),
      // listCollections: a misspelt ORDERS_COLLECTION is named instead of read as "0 orders".
      { resource: { db: SOURCE_DB, collection: "" }, actions: ["listCollections"] },
    ]),
    ...(SIDE === "source" ? [] : [
      // listIndexes: batch --run reads which indexes are ready or being built (never built twice),
      // and ARCHIVE_RETENTION's TTL index (to create, change or drop it).
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["find", "insert", "update", "createIndex", "listIndexes"] },
      { resource: { db: ARCHIVE_DB, collection: CHECKPOINTS }, actions: ["find", "insert", "update", "remove"] },
      { resource: { db: ARCHIVE_DB, collection: REJECTS }, actions: ["find", "insert", "update", "remove"] },
      // The record of forgotten persons: read before every archive write (forget --run writes it).
      { resource: { db: ARCHIVE_DB, collection: FORGOTTEN }, actions: ["find"] },
    ]),
  ],
  roles: [],
});

if (SIDE !== "source") {
  // Only for `forget --run` (a data-protection officer's command): record the person, then
  // erase their archived orders (update, with orderArchiver's find on the archive).
  admin.createRole({
    role: "orderArchiverForget",
    privileges: [{ resource: { db: ARCHIVE_DB, collection: FORGOTTEN }, actions: ["insert", "update"] }],
    roles: [],
  });
}

if (SIDE !== "archive") {
  // Optional: the source indexes batch creates (status+date_commande, status+_id,
  // status+date_livraison, numero_commande). Without it batch warns once and continues.
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

  // Only for `restore --run`: put archived orders back into the source (insert, never update
  // or remove: an order the source holds already is left alone). With orderArchiver, whose
  // update on the archive marks each restored order against the purge (RESTORE_HOLD).
  admin.createRole({
    role: "orderArchiverRestore",
    privileges: [{ resource: { db: SOURCE_DB, collection: ORDERS }, actions: ["insert"] }],
    roles: [],
  });
}

if (SIDE !== "source") {
  // Only with ARCHIVE_RETENTION: batch --run changes its TTL index's age in place (collMod),
  // drops the index once the setting is unset (dropIndex), and deletes the archived orders
  // without date_livraison whose order date is past the retention (remove: no TTL index sees them).
  admin.createRole({
    role: "orderArchiverRetention",
    privileges: [
      { resource: { db: ARCHIVE_DB, collection: ARCHIVE }, actions: ["collMod", "dropIndex", "remove"] },
    ],
    roles: [],
  });
}

// One user per use; passwordPrompt() keeps the password out of shell history.
admin.createUser({
  user: "order-archiver",
  pwd: passwordPrompt(),
  roles: SIDE === "archive" ? ["orderArchiver"] : ["orderArchiver", "orderArchiverSourceIndexes"],
});
// With ARCHIVE_RETENTION, add "orderArchiverRetention" to the roles of the user that runs batch --run,
// and keep it after unsetting the setting until a batch --run has dropped the TTL index (doctor says so).
// admin.createUser({ user: "order-archiver-purge", pwd: passwordPrompt(), roles: ["orderArchiver", "orderArchiverPurge"] });
// restore --run (a support agent's occasional task), its own user:
// admin.createUser({ user: "order-archiver-restore", pwd: passwordPrompt(), roles: ["orderArchiver", "orderArchiverRestore"] });
