/* copy-offload.c - jobtap plugin: hand each dw job its copy-offload variables
 *
 * Purpose:
 *  For jobs with attributes.system.dw (the #DW directives flux-coral2 acts on):
 *  - job.validate: reject malformed copy-offload requests with a clear text:
 *    a dw attribute that is neither a string nor a list of strings, and
 *    requires=copy-offload without a '#DW container' directive.
 *  - job.state.run: start the prolog action "copy-offload", send
 *    copy-offload.prepare {id, userid, dw} to the copy-offload service, post
 *    its reply's variables as event "copy-offload-env" with context
 *    {"variables": {NAME: value}}, then finish the prolog.  The job shells
 *    start only after every prolog finishes, so the shell plugin always finds
 *    the event.
 *  - If the service goes away while it holds the request (a module reload or
 *    a restart: the broker answers EHOSTUNREACH), the request is re-sent
 *    every RETRY_DELAY seconds (ENOSYS meanwhile means "not back yet") until
 *    the job's timeout runs out.  A service that is not running when the job
 *    first asks is an error at once: no job waits out a timeout for nothing.
 *  - If the service fails, times out or is not running, a job that asked for
 *    copy-offload gets a fatal exception of type "copy-offload" saying what
 *    failed and what to check.  Any other dw job proceeds with no variables
 *    (a warning goes to the broker log): it asked for nothing this plugin
 *    provides.
 *  - The job's timeout is a timer of its own, never a timeout on the RPC
 *    future: a request given up on stays unanswered as far as flux-core is
 *    concerned, so the service's late answer is dropped instead of being
 *    taken for another RPC of the job-manager (see send_prepare).
 *  - 'flux jobtap remove copy-offload.so' while jobs wait in its prolog ends
 *    those prologs as a failure would (see waiting_list_destroy): no job is
 *    left stuck in RUN with an active prolog.
 *  - job.state.inactive: tell the service to forget the job (and its token).
 *  The variables are never logged; they travel only in the job eventlog, which
 *  only the job owner and the instance owner can read.
 *
 * Configuration (conf table, all optional):
 *   timeout   seconds to wait for the service's answer, re-sends after a
 *             service restart included (default 1860, i.e.
 *             longer than the service's default prepare-timeout of 1800, so
 *             the service normally answers first with the precise reason).
 *
 * Load with:
 *   [job-manager]
 *   plugins = [ { load = "copy-offload.so", conf = { timeout = 1860 } } ]
 * or: flux jobtap load /path/to/copy-offload.so timeout=1860
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <jansson.h>
#include <flux/core.h>
#include <flux/jobtap.h>

#define PLUGIN_NAME "copy-offload"
#define PROLOG_NAME "copy-offload"
#define ENV_EVENT "copy-offload-env"
#define EXCEPTION_TYPE "copy-offload"
#define PREP_AUX "copy-offload::prep"
#define WAITING_AUX "copy-offload::waiting"
#define DEFAULT_TIMEOUT 1860.
#define RETRY_DELAY 1.
/* The Flux vocabulary: flux_plugin/vocabulary.py holds the same words (a test compares). */
#define PREPARE_TOPIC "copy-offload.prepare"
#define FORGET_TOPIC "copy-offload.forget"
#define VARIABLES_KEY "variables"
#define DIRECTIVE_WORD "copy-offload"

/* A job whose copy-offload prolog is active, in the plugin's waiting list.
 *
 * Ownership: allocated in run_cb as the prolog starts and linked into the
 * list, which owns it; prolog_stop unlinks and frees it.  When the job's aux
 * data goes while the prolog is active (prep_release: the plugin is being
 * removed, or the job-manager is shutting down), the entry stays in the list
 * alone, and the list's destructor deals with it.
 */
struct waiting {
    flux_jobid_t id;
    bool asks;
    struct waiting *prev, *next;
};

/* The plugin's waiting list.  Ownership: the plugin's aux data
 * (waiting_list_destroy is its destructor, run when the plugin is destroyed).
 */
struct waiting_list {
    flux_plugin_t *p;
    struct waiting *head;
};

/* One dw job's copy-offload prolog.
 *
 * Ownership: allocated in run_cb with one reference, which the job's aux
 * list owns (prep_release is its destructor: the job-manager calls it when
 * the job is destroyed, or when this plugin is removed).  Every callback that
 * may make the job end while it runs (prepare_cb, timer_cb) holds
 * a second reference for its duration, so the struct outlives any job-ending
 * call it makes.  Once 'attached' is false the job is gone: touch nothing of
 * the job.  The future 'f' and the timers 'retry' and 'expiry' are owned by
 * the struct and destroyed with it (or earlier, when the prolog finishes);
 * their callbacks never run after that.  'dw' holds a reference on the
 * jobspec's dw value.  'waiting' is the job's entry in the waiting list while
 * the prolog is active (owned by the list, see struct waiting).
 */
struct prep {
    int refcount;
    bool attached;  /* still in the job's aux list (the job exists) */
    flux_plugin_t *p;
    flux_jobid_t id;
    int userid;
    json_t *dw;
    flux_future_t *f;
    struct waiting_list *list;
    struct waiting *waiting;
    flux_watcher_t *retry;  /* re-sends after the service went away */
    flux_watcher_t *expiry; /* fires at 'deadline' (see send_prepare) */
    double deadline;        /* reactor time when the job's timeout runs out */
    int retries;
    bool served;    /* a service held the request once (and went away) */
    bool away;      /* waiting to re-send: the service went away */
    bool asks;      /* requires=copy-offload */
    bool active;    /* prolog started and not finished */
};

static double rpc_timeout = DEFAULT_TIMEOUT;

/* Walk the directives in one dw string: note whether one says
 * requires=...copy-offload... and whether one is '#DW container ...'.
 */
static void scan_directives (const char *s, bool *asks, bool *container)
{
    char *copy, *tok, *save = NULL;
    bool after_dw = false;

    if (!(copy = strdup (s)))  /* ours; freed below */
        return;
    for (tok = strtok_r (copy, " \t\r\n", &save); tok;
         tok = strtok_r (NULL, " \t\r\n", &save)) {
        if (after_dw && !strcmp (tok, "container"))
            *container = true;
        after_dw = !strcmp (tok, "#DW");
        if (!strncmp (tok, "requires=", 9)) {
            char *word, *save2 = NULL;
            for (word = strtok_r (tok + 9, ",", &save2); word;
                 word = strtok_r (NULL, ",", &save2)) {
                if (!strcmp (word, DIRECTIVE_WORD))
                    *asks = true;
            }
        }
    }
    free (copy);
}

/* Return 0 and fill asks/container for a valid dw attribute, -1 if it is
 * neither a string nor a list of strings.
 */
static int scan_dw (json_t *dw, bool *asks, bool *container)
{
    size_t i;
    json_t *entry;

    *asks = *container = false;
    if (json_is_string (dw)) {
        scan_directives (json_string_value (dw), asks, container);
        return 0;
    }
    if (!json_is_array (dw))
        return -1;
    json_array_foreach (dw, i, entry) {
        if (!json_is_string (entry))
            return -1;
    }
    json_array_foreach (dw, i, entry)
        scan_directives (json_string_value (entry), asks, container);
    return 0;
}

static int validate_cb (flux_plugin_t *p,
                        const char *topic,
                        flux_plugin_arg_t *args,
                        void *arg)
{
    json_t *dw = NULL;
    bool asks, container;

    if (flux_plugin_arg_unpack (args,
                                FLUX_PLUGIN_ARG_IN,
                                "{s:{s?{s?{s?o}}}}",
                                "jobspec",
                                  "attributes",
                                    "system",
                                      "dw", &dw) < 0)
        return flux_jobtap_reject_job (p, args, "copy-offload: cannot read "
                                       "the jobspec: %s",
                                       flux_plugin_arg_strerror (args));
    if (!dw)
        return 0;
    if (scan_dw (dw, &asks, &container) < 0)
        return flux_jobtap_reject_job (p, args, "copy-offload: "
                                       "attributes.system.dw must be a string "
                                       "or a list of strings");
    if (asks && !container)
        return flux_jobtap_reject_job (p, args, "copy-offload: "
                                       "requires=copy-offload needs a "
                                       "'#DW container' directive that runs "
                                       "the copy-offload server, e.g. "
                                       "'#DW container name=copyoff "
                                       "profile=copy-offload-default "
                                       "DW_JOB_my_storage=my-storage'");
    return 0;
}

static struct prep *prep_incref (struct prep *prep)
{
    prep->refcount++;
    return prep;
}

static void prep_decref (struct prep *prep)
{
    if (prep && --prep->refcount == 0) {
        int saved_errno = errno;
        flux_watcher_destroy (prep->retry);
        flux_watcher_destroy (prep->expiry);
        flux_future_destroy (prep->f);
        json_decref (prep->dw);
        free (prep);
        errno = saved_errno;
    }
}

/* The job-aux destructor: the job is being destroyed (or the plugin
 * removed).  Drop the job's reference; a callback still running keeps its own.
 */
static void prep_release (void *arg)
{
    struct prep *prep = arg;
    if (prep) {
        prep->attached = false;
        prep->active = false;
        prep->waiting = NULL;  /* an active prolog's entry stays in the list */
        prep_decref (prep);
    }
}

static struct waiting *waiting_add (struct waiting_list *list,
                                    flux_jobid_t id, bool asks)
{
    struct waiting *w;

    if (!(w = calloc (1, sizeof (*w))))
        return NULL;
    w->id = id;
    w->asks = asks;
    w->next = list->head;
    if (list->head)
        list->head->prev = w;
    list->head = w;
    return w;
}

static void waiting_remove (struct waiting_list *list, struct waiting *w)
{
    if (w) {
        if (w->prev)
            w->prev->next = w->next;
        else
            list->head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        free (w);
    }
}

/* Stop waiting: no re-send, no late reply.  Returns false if the prolog had
 * already finished.  Touches only the struct, never the job.
 */
static bool prolog_stop (struct prep *prep)
{
    if (!prep->active || !prep->attached)
        return false;
    prep->active = false;
    waiting_remove (prep->list, prep->waiting);
    prep->waiting = NULL;
    flux_watcher_destroy (prep->retry);
    prep->retry = NULL;
    flux_watcher_destroy (prep->expiry);
    prep->expiry = NULL;
    /* A late reply is of no use.  Unless a reply fulfilled it, the future
     * goes unfulfilled, so its matchtag stays reserved until the service's
     * late answer arrives (see send_prepare).
     */
    flux_future_destroy (prep->f);
    prep->f = NULL;
    return true;
}

/* Finish the prolog of job 'id'.  This can end the job (and so run
 * prep_release) before it returns: it takes plain values, and callers touch
 * no job state after it.
 */
static void prolog_finish (flux_plugin_t *p, flux_jobid_t id, int status)
{
    if (flux_jobtap_prolog_finish (p, id, PROLOG_NAME, status) < 0)
        flux_log_error (flux_jobtap_get_flux (p),
                        "copy-offload: finishing the prolog of job %ju",
                        (uintmax_t)id);
}

static void prolog_done (struct prep *prep, int status)
{
    if (prolog_stop (prep))
        prolog_finish (prep->p, prep->id, status);  /* last use of the job */
}

/* End the copy-offload prolog of job 'id' after a failure ('what'): a job
 * that asked for copy-offload gets a fatal exception; any other dw job
 * proceeds without variables (it asked for nothing this plugin provides).
 * The caller has stopped the wait first (prolog_stop), so exception_cb, run
 * inside the raise, does not finish the prolog too; the job cannot end while
 * the prolog is active, so it is still there for prolog_finish, which may end
 * it.  Takes plain values: callers touch no job state after it.
 */
static void fail_prolog (flux_plugin_t *p, flux_jobid_t id, bool asks,
                         const char *what)
{
    flux_t *h = flux_jobtap_get_flux (p);

    if (asks) {
        if (flux_jobtap_raise_exception (p, id, EXCEPTION_TYPE, 0,
                                         "copy-offload: %s", what) < 0)
            flux_log_error (h, "copy-offload: raising an exception on job %ju",
                            (uintmax_t)id);
        prolog_finish (p, id, 1);
        return;
    }
    flux_log (h, LOG_WARNING, "copy-offload: job %ju proceeds without "
              "copy-offload variables: %s", (uintmax_t)id, what);
    if (flux_jobtap_event_post_pack (p, id, ENV_EVENT, "{s:{}}",
                                     VARIABLES_KEY) < 0)
        flux_log_error (h, "copy-offload: posting %s to job %ju",
                        ENV_EVENT, (uintmax_t)id);
    prolog_finish (p, id, 0);
}

/* The service could not give the job its variables. */
static void prepare_failed (struct prep *prep, const char *what)
{
    if (prolog_stop (prep))
        fail_prolog (prep->p, prep->id, prep->asks, what);
}

/* The plugin is being destroyed: 'flux jobtap remove' (or a config reload
 * that removes it), or the job-manager's shutdown.  By now flux-core has
 * destroyed the jobs' aux data of this plugin (so no prep remains) and taken
 * the plugin off its list (so none of our callbacks runs again); the jobs
 * themselves are intact.  A job still listed would keep an active prolog that
 * nobody finishes, stuck in RUN forever: end each as a failure would.  At
 * shutdown the job-manager has destroyed every job before its plugins, so
 * the lookup finds none and nothing is touched.
 */
static void waiting_list_destroy (void *arg)
{
    struct waiting_list *list = arg;
    struct waiting *w;
    flux_plugin_arg_t *job;

    while ((w = list->head)) {
        list->head = w->next;
        if ((job = flux_jobtap_job_lookup (list->p, w->id))) {
            flux_plugin_arg_destroy (job);
            /* No event of the job may reach this plugin again (flux-core
             * drops the subscriptions with the plugin's aux data too, but
             * in an order this must not rely on).
             */
            flux_jobtap_job_unsubscribe (list->p, w->id);
            fail_prolog (list->p, w->id, w->asks, "the copy-offload jobtap "
                         "plugin was removed ('flux jobtap remove') while "
                         "the job waited for its variables; load it again "
                         "('flux jobtap load .../copy-offload.so') and "
                         "resubmit the job");
        }
        free (w);
    }
    free (list);
}

static bool all_strings (json_t *o)
{
    const char *key;
    json_t *value;

    if (!json_is_object (o))
        return false;
    json_object_foreach (o, key, value) {
        if (!json_is_string (value))
            return false;
    }
    return true;
}

static void prepare_cb (flux_future_t *f, void *arg);
static void timer_cb (flux_reactor_t *r, flux_watcher_t *w, int revents,
                      void *arg);

/* Send copy-offload.prepare.  The future gets no timeout of its own: when
 * flux_future_then()'s timer fires, flux-core fulfills the future with
 * ETIMEDOUT, and destroying it then returns its matchtag to the job-manager
 * handle's pool although the service still holds the request.  The service's
 * answer, which comes later (at the latest when the job becomes inactive and
 * copy-offload.forget makes it answer ECANCELED), then goes to whichever RPC
 * of the job-manager got that matchtag next: a KVS commit of an eventlog (the
 * job-manager exits: "commit_continuation: eventlog update failed") or another
 * job's prepare (that job would get this job's variables).  The job's deadline
 * is the 'expiry' timer instead: a future destroyed before any reply keeps
 * its matchtag until the late answer arrives (flux_rpc(3), "premature
 * destruction").
 */
static int send_prepare (struct prep *prep)
{
    flux_t *h = flux_jobtap_get_flux (prep->p);
    double left = prep->deadline - flux_reactor_now (flux_get_reactor (h));
    flux_future_t *f;

    if (left <= 0.) {
        errno = ETIMEDOUT;
        return -1;
    }
    if (!(f = flux_rpc_pack (h,
                             PREPARE_TOPIC,
                             FLUX_NODEID_ANY,
                             0,
                             "{s:I s:i s:O}",
                             "id", prep->id,
                             "userid", prep->userid,
                             "dw", prep->dw)))
        return -1;
    if (flux_future_then (f, -1., prepare_cb, prep) < 0)
        goto error;
    flux_future_destroy (prep->f);  /* fulfilled by a reply (a retry) or NULL */
    prep->f = f;  /* owned by prep from here: destroyed by prolog_stop or prep_decref */
    prep->away = false;
    return 0;
error:
    flux_future_destroy (f);
    return -1;
}

/* The service went away while it held the request (EHOSTUNREACH), or has
 * not come back yet (ENOSYS after that).  Re-send in RETRY_DELAY seconds if
 * the job's timeout allows: return true.  Otherwise return false.
 */
static bool retry_later (struct prep *prep, int errnum)
{
    flux_t *h = flux_jobtap_get_flux (prep->p);
    flux_reactor_t *r = flux_get_reactor (h);

    if (errnum == EHOSTUNREACH)
        prep->served = true;
    else if (errnum != ENOSYS || !prep->served)
        return false;
    if (flux_reactor_now (r) + RETRY_DELAY >= prep->deadline)
        return false;
    /* The timer is owned by prep (destroyed by prolog_stop or prep_decref). */
    if (!prep->retry
        && !(prep->retry = flux_timer_watcher_create (r, RETRY_DELAY, 0.,
                                                      timer_cb, prep))) {
        flux_log_error (h, "copy-offload: creating a retry timer");
        return false;
    }
    flux_timer_watcher_reset (prep->retry, RETRY_DELAY, 0.);
    flux_watcher_start (prep->retry);
    prep->away = true;
    prep->retries++;
    flux_log (h, LOG_INFO, "copy-offload: job %ju: the copy-offload service "
              "went away (%s); re-sending copy-offload.prepare in %gs "
              "(retry %d)", (uintmax_t)prep->id, flux_strerror (errnum),
              RETRY_DELAY, prep->retries);
    return true;
}

/* Say in 'what' why the prepare of 'prep' failed with 'errnum'; 'errstr' is
 * the service's text, if its reply carried one.
 */
static void describe_failure (struct prep *prep, int errnum, const char *errstr,
                              char *what, size_t size)
{
    if (prep->served && (errnum == EHOSTUNREACH || errnum == ENOSYS))
        snprintf (what, size,
                  "the copy-offload service went away and was not back "
                  "within %gs; check 'flux module list' (or "
                  "flux-copy-offload.service), 'flux copy-offload "
                  "status' and 'flux dmesg'", rpc_timeout);
    else if (errnum == ENOSYS)
        snprintf (what, size,
                  "the copy-offload service is not running; load it "
                  "with 'flux module load .../copy-offload.py' or start "
                  "flux-copy-offload.service, then check 'flux dmesg'");
    else if (errstr)
        snprintf (what, size, "%s", errstr);
    else if (errnum == ETIMEDOUT)
        snprintf (what, size,
                  "no answer from the copy-offload service within %gs; "
                  "check 'flux copy-offload status' and 'flux dmesg'",
                  rpc_timeout);
    else
        snprintf (what, size, PREPARE_TOPIC " failed: %s",
                  flux_strerror (errnum));
}

static void prepare_reply (struct prep *prep, flux_future_t *f)
{
    json_t *variables = NULL;
    char what[512];

    if (!prep->active)
        return; /* the job got a fatal exception meanwhile */
    if (flux_rpc_get_unpack (f, "{s:o}", VARIABLES_KEY, &variables) < 0) {
        /* A reply's text, unless flux_future_error_string() fell back to
         * strerror (a reply without one).
         */
        int errnum = errno;
        const char *errstr = flux_future_error_string (f);
        bool has_text = errstr && strcmp (errstr, flux_strerror (errnum));
        if (retry_later (prep, errnum))
            return;
        describe_failure (prep, errnum, has_text ? errstr : NULL, what,
                          sizeof (what));
        prepare_failed (prep, what);
        return;
    }
    if (!all_strings (variables)) {
        prepare_failed (prep, "the copy-offload service sent variables that "
                        "are not all strings");
        return;
    }
    if (flux_jobtap_event_post_pack (prep->p, prep->id, ENV_EVENT,
                                     "{s:O}", VARIABLES_KEY, variables) < 0) {
        snprintf (what, sizeof (what), "cannot post %s: %s", ENV_EVENT,
                  strerror (errno));
        prepare_failed (prep, what);
        return;
    }
    prolog_done (prep, 0);  /* a no-op if the post ended the job */
}

/* The service's reply.  Any step may end the job, which runs prep_release:
 * hold a reference until prepare_reply is done with 'prep'.
 */
static void prepare_cb (flux_future_t *f, void *arg)
{
    struct prep *prep = prep_incref (arg);

    prepare_reply (prep, f);
    prep_decref (prep);
}

/* prep's timers: 'retry' (re-send after the service went away) and 'expiry'
 * (the job's timeout ran out with no usable answer; the request, if one is
 * out, is abandoned unanswered: prolog_stop destroys its future).
 */
static void timer_cb (flux_reactor_t *r,
                      flux_watcher_t *w,
                      int revents,
                      void *arg)
{
    struct prep *prep = prep_incref (arg);  /* prepare_failed may end the job */
    char what[512];

    if (prep->active && w == prep->expiry) {
        describe_failure (prep, prep->away ? EHOSTUNREACH : ETIMEDOUT, NULL,
                          what, sizeof (what));
        prepare_failed (prep, what);
    }
    else if (prep->active && send_prepare (prep) < 0) {
        snprintf (what, sizeof (what), "cannot re-send copy-offload.prepare: "
                  "%s", strerror (errno));
        prepare_failed (prep, what);
    }
    prep_decref (prep);
}

static int run_cb (flux_plugin_t *p,
                   const char *topic,
                   flux_plugin_arg_t *args,
                   void *arg)
{
    flux_t *h = flux_jobtap_get_flux (p);
    json_t *dw = NULL;
    flux_jobid_t id;
    int userid;
    bool container;
    struct prep *prep;

    if (flux_plugin_arg_unpack (args,
                                FLUX_PLUGIN_ARG_IN,
                                "{s:I s:i s:{s?{s?{s?o}}}}",
                                "id", &id,
                                "userid", &userid,
                                "jobspec",
                                  "attributes",
                                    "system",
                                      "dw", &dw) < 0) {
        flux_jobtap_raise_exception (p, FLUX_JOBTAP_CURRENT_JOB,
                                     EXCEPTION_TYPE, 0,
                                     "copy-offload: cannot read the job: %s",
                                     flux_plugin_arg_strerror (args));
        return -1;
    }
    if (!dw)
        return 0;
    if (!(prep = calloc (1, sizeof (*prep))))
        goto error;
    prep->refcount = 1;  /* the job's aux list takes this reference */
    prep->p = p;
    prep->id = id;
    prep->userid = userid;
    prep->dw = json_incref (dw);  /* prep's own reference; the jobspec may go first */
    prep->deadline = flux_reactor_now (flux_get_reactor (h)) + rpc_timeout;
    if (scan_dw (dw, &prep->asks, &container) < 0)
        prep->asks = false; /* rejected at validate; only for jobs from before */
    if (flux_jobtap_job_aux_set (p, FLUX_JOBTAP_CURRENT_JOB, PREP_AUX,
                                 prep, prep_release) < 0) {
        prep_decref (prep);
        goto error;
    }
    prep->attached = true;
    /* The timer is owned by prep (destroyed by prolog_stop or prep_decref). */
    if (!(prep->expiry = flux_timer_watcher_create (flux_get_reactor (h),
                                                    rpc_timeout, 0.,
                                                    timer_cb, prep)))
        goto error;
    flux_watcher_start (prep->expiry);
    if (flux_jobtap_job_subscribe (p, FLUX_JOBTAP_CURRENT_JOB) < 0
        || flux_jobtap_prolog_start (p, PROLOG_NAME) < 0)
        goto error;
    prep->list = flux_plugin_aux_get (p, WAITING_AUX);
    if (!(prep->waiting = waiting_add (prep->list, id, prep->asks))) {
        prep->active = true;
        prepare_failed (prep, "out of memory");
        return 0;
    }
    prep->active = true;
    if (send_prepare (prep) < 0)
        prepare_failed (prep, "cannot send copy-offload.prepare");
    return 0;
error:
    flux_jobtap_raise_exception (p, FLUX_JOBTAP_CURRENT_JOB, EXCEPTION_TYPE, 0,
                                 "copy-offload: cannot start the prolog: %s",
                                 strerror (errno));
    return -1;
}

/* A fatal exception (a cancel, or another plugin's failure) ends the wait:
 * finish the prolog so the job can clean up; the late reply is ignored.
 */
static int exception_cb (flux_plugin_t *p,
                         const char *topic,
                         flux_plugin_arg_t *args,
                         void *arg)
{
    struct prep *prep;
    int severity = -1;

    if (flux_plugin_arg_unpack (args,
                                FLUX_PLUGIN_ARG_IN,
                                "{s:{s:{s:i}}}",
                                "entry",
                                  "context",
                                    "severity", &severity) < 0)
        return 0;
    if (severity == 0
        && (prep = flux_jobtap_job_aux_get (p, FLUX_JOBTAP_CURRENT_JOB,
                                            PREP_AUX)))
        prolog_done (prep, 1);
    return 0;
}

static int inactive_cb (flux_plugin_t *p,
                        const char *topic,
                        flux_plugin_arg_t *args,
                        void *arg)
{
    flux_t *h = flux_jobtap_get_flux (p);
    json_t *dw = NULL;
    flux_jobid_t id;
    flux_future_t *f;

    if (flux_plugin_arg_unpack (args,
                                FLUX_PLUGIN_ARG_IN,
                                "{s:I s:{s?{s?{s?o}}}}",
                                "id", &id,
                                "jobspec",
                                  "attributes",
                                    "system",
                                      "dw", &dw) < 0
        || !dw)
        return 0;
    if (!(f = flux_rpc_pack (h,
                             FORGET_TOPIC,
                             FLUX_NODEID_ANY,
                             FLUX_RPC_NORESPONSE,
                             "{s:I}",
                             "id", id)))
        flux_log_error (h, "copy-offload: sending " FORGET_TOPIC);
    flux_future_destroy (f);  /* NORESPONSE: nothing comes back to it */
    return 0;
}

static int query_cb (flux_plugin_t *p,
                     const char *topic,
                     flux_plugin_arg_t *args,
                     void *arg)
{
    return flux_plugin_arg_pack (args, FLUX_PLUGIN_ARG_OUT,
                                 "{s:f}", "timeout", rpc_timeout);
}

static const struct flux_plugin_handler tab[] = {
    { "job.validate", validate_cb, NULL },
    { "job.state.run", run_cb, NULL },
    { "job.event.exception", exception_cb, NULL },
    { "job.state.inactive", inactive_cb, NULL },
    { "plugin.query", query_cb, NULL },
    { 0 },
};

int flux_plugin_init (flux_plugin_t *p)
{
    flux_t *h = flux_jobtap_get_flux (p);
    double timeout = DEFAULT_TIMEOUT;
    struct waiting_list *list;

    if (flux_plugin_get_conf (p)
        && flux_plugin_conf_unpack (p, "{s?F !}", "timeout", &timeout) < 0) {
        flux_log (h, LOG_ERR, "copy-offload: conf takes only timeout=SECONDS: "
                  "%s", flux_plugin_strerror (p));
        errno = EINVAL;
        return -1;
    }
    if (timeout <= 0.) {
        flux_log (h, LOG_ERR, "copy-offload: conf timeout must be > 0 "
                  "(got %g)", timeout);
        errno = EINVAL;
        return -1;
    }
    rpc_timeout = timeout;
    if (!(list = calloc (1, sizeof (*list))))
        return -1;
    list->p = p;
    if (flux_plugin_aux_set (p, WAITING_AUX, list, waiting_list_destroy) < 0) {
        free (list);
        return -1;
    }
    return flux_plugin_register (p, PLUGIN_NAME, tab);
}

// vi:ts=4 sw=4 expandtab
