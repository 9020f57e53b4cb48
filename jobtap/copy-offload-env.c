/* copy-offload-env.c - job shell plugin: put the copy-offload variables in
 * the job's environment
 *
 * Purpose:
 *  In shell.init, for jobs with attributes.system.dw, read the
 *  "copy-offload-env" event that the copy-offload jobtap plugin posted in the
 *  job eventlog during its prolog, and set each of its context.variables
 *  (DW_WORKFLOW_TOKEN, DW_WORKFLOW_NAME, DW_WORKFLOW_NAMESPACE and the
 *  Workflow's status.env) in the environment of every task.  Jobs without dw
 *  are not touched.  Values are never logged (the token is among them).
 *
 *  The eventlog is watched rather than read once: the job manager commits
 *  events in batches, so a fast shell could otherwise read it just before the
 *  event lands.  The event is always posted before the copy-offload prolog
 *  ends, and so before the job's start event (which precedes shell.init), so
 *  the watch ends at the event, or with an error at the copy-offload
 *  prolog-finish, at start, at clean or at a fatal exception.  A job never
 *  waits long when the jobtap plugin is missing: start comes at once.
 *
 * Options (shell options, -o copy-offload.timeout=N):
 *   copy-offload.timeout  seconds to wait for the next eventlog entry
 *                         (default 60), a guard against a stuck KVS.
 *
 * Install in the shell plugin directory
 * (pkg-config --variable=fluxshellpluginpath flux-core): the default
 * initrc.lua loads every *.so there.
 */

#define FLUX_SHELL_PLUGIN_NAME "copy-offload-env"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <jansson.h>
#include <flux/core.h>
#include <flux/shell.h>

#define ENV_EVENT "copy-offload-env"
#define PROLOG_NAME "copy-offload"
/* flux_plugin/vocabulary.py holds the same words (a test compares). */
#define VARIABLES_KEY "variables"
#define SHELL_OPTION "copy-offload"
#define DEFAULT_TIMEOUT 60.

static int set_variables (flux_shell_t *shell, json_t *variables)
{
    const char *key;
    json_t *value;
    int count = 0;

    if (!json_is_object (variables)) {
        shell_log_error ("%s event has no variables object", ENV_EVENT);
        return -1;
    }
    json_object_foreach (variables, key, value) {
        if (!json_is_string (value)) {
            shell_log_error ("%s: variable %s is not a string", ENV_EVENT, key);
            return -1;
        }
        if (flux_shell_setenvf (shell, 1, key, "%s",
                                json_string_value (value)) < 0) {
            shell_log_errno ("setting %s", key);
            return -1;
        }
        shell_debug ("set %s", key);
        count++;
    }
    shell_debug ("%d copy-offload variable(s) set", count);
    return 0;
}

/* Look at one eventlog entry.  Returns 1 when done (variables set), 0 to keep
 * reading, -1 on error (already logged).
 */
static int check_entry (flux_shell_t *shell, const char *text)
{
    json_t *entry;
    json_t *context = NULL;
    const char *name;
    int rc = 0;

    /* 'entry' is ours (decref'd before return); 'name', 'context' and
     * 'desc' borrow from it, so nothing below outlives it.
     */
    if (!(entry = json_loads (text, 0, NULL))
        || json_unpack (entry, "{s:s s?o}", "name", &name,
                        "context", &context) < 0) {
        shell_log_error ("cannot parse a job eventlog entry");
        json_decref (entry);
        return -1;
    }
    if (!strcmp (name, ENV_EVENT)) {
        rc = set_variables (shell, json_object_get (context, VARIABLES_KEY))
             < 0 ? -1 : 1;
    }
    else if (!strcmp (name, "prolog-finish")) {
        const char *desc = NULL;
        if (context
            && json_unpack (context, "{s:s}", "description", &desc) == 0
            && !strcmp (desc, PROLOG_NAME)) {
            shell_log_error ("the copy-offload prolog finished without a %s "
                             "event; see the job's exception and "
                             "'flux dmesg'", ENV_EVENT);
            rc = -1;
        }
    }
    else if (!strcmp (name, "start") || !strcmp (name, "clean")) {
        /* The jobtap plugin posts the event before its prolog ends, and so
         * before start: it is not coming.
         */
        shell_log_error ("no %s event before the job's %s event; is the "
                         "copy-offload jobtap plugin loaded "
                         "('flux jobtap list')?", ENV_EVENT, name);
        rc = -1;
    }
    else if (!strcmp (name, "exception")) {
        int severity = -1;
        if (context
            && json_unpack (context, "{s:i}", "severity", &severity) == 0
            && severity == 0) {
            shell_log_error ("the job got a fatal exception before %s",
                             ENV_EVENT);
            rc = -1;
        }
    }
    json_decref (entry);
    return rc;
}

static int read_env_event (flux_shell_t *shell, flux_t *h, flux_jobid_t id,
                           double timeout)
{
    flux_future_t *f;
    const char *text;
    int rc = 0;

    /* 'f' is ours until the end of this function; 'text' borrows from it
     * until the next flux_future_reset.  The shell runs nothing else on this
     * job meanwhile (shell.init blocks), so no callback can free either.
     */
    if (!(f = flux_job_event_watch (h, id, "eventlog", 0))) {
        shell_log_errno ("cannot watch the job eventlog");
        return -1;
    }
    while (rc == 0) {
        if (flux_future_wait_for (f, timeout) < 0) {
            if (errno == ETIMEDOUT)
                shell_log_error ("no %s event in the job eventlog after %gs",
                                 ENV_EVENT, timeout);
            else
                shell_log_errno ("waiting for the job eventlog");
            rc = -1;
            break;
        }
        if (flux_job_event_watch_get (f, &text) < 0) {
            shell_log_error ("reading the job eventlog: %s",
                             future_strerror (f, errno));
            rc = -1;
            break;
        }
        rc = check_entry (shell, text);
        flux_future_reset (f);
    }
    (void)flux_job_event_watch_cancel (f);
    flux_future_destroy (f);
    return rc < 0 ? -1 : 0;
}

static int init_cb (flux_plugin_t *p,
                    const char *topic,
                    flux_plugin_arg_t *args,
                    void *data)
{
    flux_shell_t *shell = flux_plugin_get_shell (p);
    json_t *dw = NULL;
    json_int_t id;
    double timeout = DEFAULT_TIMEOUT;
    flux_t *h;

    if (!shell
        || flux_shell_info_unpack (shell,
                                   "{s:I s:{s?{s?{s?o}}}}",
                                   "jobid", &id,
                                   "jobspec",
                                     "attributes",
                                       "system",
                                         "dw", &dw) < 0)
        return -1;
    if (!dw)
        return 0;
    if (flux_shell_getopt_unpack (shell, SHELL_OPTION, "{s?F}",
                                  "timeout", &timeout) < 0
        || timeout <= 0.) {
        shell_log_error ("-o copy-offload.timeout must be a positive number "
                         "of seconds");
        return -1;
    }
    if (!(h = flux_shell_get_flux (shell))) {
        shell_log_errno ("no Flux handle");
        return -1;
    }
    return read_env_event (shell, h, (flux_jobid_t)id, timeout);
}

int flux_plugin_init (flux_plugin_t *p)
{
    if (flux_plugin_set_name (p, FLUX_SHELL_PLUGIN_NAME) < 0
        || flux_plugin_add_handler (p, "shell.init", init_cb, NULL) < 0)
        return -1;
    return 0;
}

// vi:ts=4 sw=4 expandtab
