/*-------------------------------------------------------------------------
 *
 * guc.c
 *		The rtevents.* configuration parameters.
 *
 * Every parameter is defined here, once, with its unit, range and context.
 * Parameters read by the postmaster-started workers at launch are
 * PGC_POSTMASTER and say so; those the workers re-read on SIGHUP are
 * PGC_SIGHUP; rtevents.default_ttl is a per-session default for publishers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "libpq-fe.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "rtevents.h"

int			rt_port = 8787;
char	   *rt_listen_addresses = NULL;
char	   *rt_channel = NULL;
int			rt_default_ttl = 30 * 24 * 60 * 60;
int			rt_cleanup_interval = 60;
int			rt_cleanup_batch_size = 10000;
char	   *rt_database = NULL;
char	   *rt_feed_conninfo = NULL;
int			rt_heartbeat = 30;
int			rt_max_client_buffer = 4096;
int			rt_batch_ms = 0;
int			rt_client_timeout = 60;
int			rt_max_connections = 10000;
char	   *rt_jwt_secret = NULL;
int			rt_auth_mode = RT_AUTH_TOKEN;

static const struct config_enum_entry auth_mode_options[] = {
	{"token", RT_AUTH_TOKEN, false},
	{"none", RT_AUTH_NONE, false},
	{NULL, 0, false}
};

static emit_log_hook_type prev_emit_log_hook = NULL;

static bool
names_jwt_secret(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if (pg_strncasecmp(s, "jwt_secret", 10) == 0)
			return true;
	return false;
}

/*
 * rtevents.jwt_secret must never reach the log, but on reload the
 * postmaster logs every parameter that changed with its new value
 * ("parameter ... changed to ..."), and Postgres has no flag to spare a
 * secret.  A message that names the parameter and holds its value is
 * replaced; an error in a statement that names it is logged without the
 * statement (ALTER SYSTEM SET rtevents.jwt_secret = '...' inside a
 * transaction block, say).  This works where rtevents is loaded: in the
 * postmaster only when it is preloaded, as the worker needs anyway.
 */
static void
hide_jwt_secret(ErrorData *edata)
{
	static const char changed[] = "parameter \"rtevents.jwt_secret\" changed";

	if (edata->message != NULL && rt_jwt_secret != NULL &&
		rt_jwt_secret[0] != '\0' && names_jwt_secret(edata->message) &&
		strstr(edata->message, rt_jwt_secret) != NULL)
		edata->message = pstrdup(strncmp(edata->message, changed,
										 sizeof(changed) - 1) == 0 ? changed :
								 "message withheld: it held the value of rtevents.jwt_secret");
	if (names_jwt_secret(debug_query_string))
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}
char	   *rt_ssl_cert_file = NULL;
char	   *rt_ssl_key_file = NULL;
char	   *rt_allowed_origins = NULL;
int			rt_max_messages_per_second = 50;

/*
 * The channel is used verbatim by NOTIFY and LISTEN; refuse what NOTIFY would
 * refuse at publish time, so that a bad setting fails at SET, not later.
 */
static bool
check_channel(char **newval, void **extra, GucSource source)
{
	size_t		len = strlen(*newval);

	if (len == 0)
	{
		GUC_check_errdetail("The channel name must not be empty.");
		return false;
	}
	if (len >= NAMEDATALEN)
	{
		GUC_check_errdetail("The channel name must be shorter than %d bytes.",
							NAMEDATALEN);
		return false;
	}
	return true;
}

/*
 * A conninfo libpq cannot parse would only show up as a feed that never
 * connects; refuse it at reload instead.  Parsing connects to nothing.
 */
static bool
check_feed_conninfo(char **newval, void **extra, GucSource source)
{
	PQconninfoOption *options;
	char	   *parse_error = NULL;

	if (**newval == '\0')
		return true;
	options = PQconninfoParse(*newval, &parse_error);
	if (options == NULL)
	{
		if (parse_error != NULL)
		{
			size_t		len = strlen(parse_error);

			/* libpq ends its messages with a newline; errdetail does not */
			if (len > 0 && parse_error[len - 1] == '\n')
				parse_error[len - 1] = '\0';
			GUC_check_errdetail("%s", parse_error);
			PQfreemem(parse_error);
		}
		else
			GUC_check_errdetail("Out of memory while parsing the connection string.");
		return false;
	}
	PQconninfoFree(options);
	return true;
}

/*
 * Parameters the postmaster-started workers read once, at launch.  Postgres
 * allows PGC_POSTMASTER parameters to be defined only while preloading; a
 * backend that loads rtevents on demand has no workers and needs none.
 */
static void
define_worker_gucs(void)
{
	DefineCustomIntVariable("rtevents.port",
							"TCP port the rtevents worker serves WebSocket, SSE and HTTP on.",
							NULL,
							&rt_port,
							8787, 1, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("rtevents.listen_addresses",
							   "Address the rtevents worker listens on.",
							   "A host name or IP address; \"*\" listens on all interfaces.",
							   &rt_listen_addresses,
							   "localhost",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("rtevents.database",
							   "Database in which the rtevents extension is installed.",
							   "The background workers connect to this database.",
							   &rt_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	/* It sizes the slot array in shared memory (connections.c). */
	DefineCustomIntVariable("rtevents.max_connections",
							"Clients the rtevents worker serves at once.",
							"Each has a slot in shared memory, for the rtevents_connections "
							"view; a client over the limit is refused with 503 server_full.",
							&rt_max_connections,
							10000, 1, 1000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	/* Both set: the worker serves https and wss only. */
	DefineCustomStringVariable("rtevents.ssl_cert_file",
							   "PEM certificate (chain) the rtevents worker serves TLS with.",
							   "With rtevents.ssl_key_file; empty serves plain HTTP.",
							   &rt_ssl_cert_file,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("rtevents.ssl_key_file",
							   "PEM private key of rtevents.ssl_cert_file.",
							   NULL,
							   &rt_ssl_key_file,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("rtevents.allowed_origins",
							   "Web origins whose pages may use the rtevents worker.",
							   "Comma-separated, like https://app.example.com; \"*\" for any. "
							   "Pages of the worker's own origin, and clients that send no "
							   "Origin (not browsers), are always served.",
							   &rt_allowed_origins,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.max_messages_per_second",
							"Messages a WebSocket client may send per second.",
							"Twice as many may come in a burst; a client over it gets "
							"rate_limited and is closed.",
							&rt_max_messages_per_second,
							50, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
}

void
rt_define_gucs(void)
{
	if (process_shared_preload_libraries_in_progress)
		define_worker_gucs();

	DefineCustomStringVariable("rtevents.channel",
							   "NOTIFY channel that announces published events.",
							   NULL,
							   &rt_channel,
							   "rtevents",
							   PGC_SIGHUP,
							   0,
							   check_channel, NULL, NULL);

	DefineCustomIntVariable("rtevents.default_ttl",
							"How long an event is kept when its publisher gives no ttl.",
							"0 keeps events forever (expires_at is NULL).",
							&rt_default_ttl,
							30 * 24 * 60 * 60, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.cleanup_interval",
							"Time between runs of TTL cleanup by the background worker.",
							"0 disables cleanup by the worker; rt_cleanup() still works.",
							&rt_cleanup_interval,
							60, 0, INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.cleanup_batch_size",
							"Rows TTL cleanup deletes per transaction.",
							"Smaller batches hold row locks and snapshots for less time.",
							&rt_cleanup_batch_size,
							10000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("rtevents.feed_conninfo",
							   "Connection string of the rtevents worker's LISTEN connection.",
							   "Empty connects to this server through its first Unix socket "
							   "directory, as the operating system user, to rtevents.database. "
							   "A standby's worker must name the primary here. A dbname left "
							   "out defaults to rtevents.database; application_name and "
							   "client_encoding are always \"rtevents feed\" and UTF8.",
							   &rt_feed_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_feed_conninfo, NULL, NULL);

	DefineCustomIntVariable("rtevents.heartbeat",
							"Time between keep-alives to each client.",
							"SSE streams get a \": keep-alive\" comment this often, and "
							"WebSocket connections a ping.",
							&rt_heartbeat,
							30, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.max_client_buffer",
							"Events a client may have queued before it is closed.",
							"A client that falls this far behind is disconnected, to resume "
							"from its last event id, rather than hold memory or slow others.",
							&rt_max_client_buffer,
							4096, 64, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.client_timeout",
							"Time a WebSocket client may stay silent before it is closed.",
							"Any frame counts, the pong to the server's ping included; "
							"should be more than rtevents.heartbeat.",
							&rt_client_timeout,
							60, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rtevents.batch_ms",
							"Time events wait to go out together to a client.",
							"0 writes as soon as the socket takes it; events that arrive "
							"while a socket is busy go out together either way.",
							&rt_batch_ms,
							0, 0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * Defined in every backend, not only the preloading one: rt_token() signs
	 * with it.  Superuser-only and left out of SHOW ALL, so that other roles
	 * cannot read it; PGC_SIGHUP, not SUSET, so that it can only come from
	 * the server's configuration files, never from ALTER ROLE or ALTER
	 * DATABASE settings (pg_db_role_setting is readable by everyone).  No
	 * check hook: a refused value would be quoted in the log.
	 */
	DefineCustomStringVariable("rtevents.jwt_secret",
							   "Secret that signs and checks rtevents tokens (HS256).",
							   "At least 32 bytes, used as they are. Empty: no token is "
							   "valid, and rt_token() refuses to sign.",
							   &rt_jwt_secret,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);

	DefineCustomEnumVariable("rtevents.auth",
							 "Whether clients of the rtevents worker need a token.",
							 "token: every stream, subscription and history request needs "
							 "a valid token, and sees only what its claims allow; none: "
							 "anyone who reaches the port sees every event.",
							 &rt_auth_mode,
							 RT_AUTH_TOKEN,
							 auth_mode_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = hide_jwt_secret;

	MarkGUCPrefixReserved("rtevents");
}
