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
 * Job lifecycle (the logic is Python: 'flux copy-offload shell', run as a
 * child process whose stdout lines are "env NAME=VALUE", "info TEXT",
 * "warn TEXT" or "error TEXT"):
 *  - shell.init, for a job with -o copy-offload.local-server: the helper
 *    starts a per-job copy-offload-server on this node and prints the
 *    variables every task gets (a failure fails the job).
 *  - shell.finish (once every local task has exited, before the shell
 *    exits, so the job's finish event waits): for dw jobs and per-job
 *    server jobs the helper drains the job's copy-offload server, records
 *    each copy's outcome in the job's guest KVS and stops a per-job server.
 *  The helper gets the shell's environment plus the job's copy-offload
 *  variables (token included; never logged here).
 *
 * Options (shell options, -o copy-offload.timeout=N):
 *   copy-offload.timeout  seconds to wait for the next eventlog entry
 *                         (default 60), a guard against a stuck KVS.
 *   copy-offload.local-server, .drain, .drain-timeout: read by the helper
 *                         (docs/flux.md).
 *
 * Install in the shell plugin directory
 * (pkg-config --variable=fluxshellpluginpath flux-core): the default
 * initrc.lua loads every *.so there.
 */

#define FLUX_SHELL_PLUGIN_NAME "copy-offload-env"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <jansson.h>
#include <flux/core.h>

extern char **environ;
#include <flux/shell.h>

#define ENV_EVENT "copy-offload-env"
#define PROLOG_NAME "copy-offload"
/* flux_plugin/vocabulary.py holds the same words (a test compares). */
#define VARIABLES_KEY "variables"
#define SHELL_OPTION "copy-offload"
#define DEFAULT_TIMEOUT 60.
#define HELPER_AUX "copy-offload::helper"
#define DRAIN_REF "copy-offload::drain"
#ifndef COPY_OFFLOAD_FLUX
#define COPY_OFFLOAD_FLUX "flux"
#endif

/* The job's variables the helper needs (the shell's own environment lacks
 * them: they were set for the tasks).
 */
static const char *helper_vars[] = {
    "DW_WORKFLOW_TOKEN", "NNF_CONTAINER_LAUNCHER", "NNF_CONTAINER_PORTS",
    "COPY_OFFLOAD_CA_FILE", "FLUX_JOB_TMPDIR", "HOME", NULL,
};

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

/* Act on one line of the helper's output ('len' bytes, newline or not). */
static void helper_line (flux_shell_t *shell, const char *text, int len,
                         bool want_env)
{
    char *line, *eq;

    /* 'line' is ours: a NUL-terminated copy without the newline. */
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (!(line = strndup (text, len))) {
        shell_log_errno ("reading the copy-offload helper");
        return;
    }
    if (!strncmp (line, "env ", 4) && want_env && (eq = strchr (line + 4, '='))) {
        *eq = '\0';
        if (flux_shell_setenvf (shell, 1, line + 4, "%s", eq + 1) < 0)
            shell_log_errno ("setting %s", line + 4);
    }
    else if (!strncmp (line, "info ", 5))
        shell_log ("%s", line + 5);
    else if (!strncmp (line, "warn ", 5))
        shell_warn ("%s", line + 5);
    else if (!strncmp (line, "error ", 6))
        shell_log_error ("%s", line + 6);
    else if (len > 0)
        shell_warn ("helper: %s", line);  /* its stderr, e.g. a Python error */
    free (line);
}

/* What both callbacks need to know of the job.  'options' is the job's
 * -o copy-offload object as JSON, owned by this struct (NULL when absent).
 */
struct job {
    json_int_t id;
    int rank;
    bool dw;
    char *options;
};

/* argv for 'flux copy-offload shell ACTION ...' (strings borrowed from the
 * caller's buffers and 'job'); returns argc.
 */
static int helper_args (const char *argv0, const char *action,
                        const struct job *job, char *idbuf, size_t idlen,
                        char *rankbuf, size_t ranklen, const char *argv[12])
{
    snprintf (idbuf, idlen, "%ju", (uintmax_t)job->id);
    snprintf (rankbuf, ranklen, "%d", job->rank);
    const char *args[] = {
        argv0, "copy-offload", "shell", action, "--jobid", idbuf,
        "--rank", rankbuf, "--options", job->options ? job->options : "{}",
        job->dw ? "--dw" : "--no-dw", NULL,
    };
    _Static_assert (sizeof (args) / sizeof (args[0]) <= 12,
                    "helper_args: the callers' argv holds 12");
    memcpy (argv, args, sizeof (args));
    return (int)(sizeof (args) / sizeof (args[0])) - 1;
}

/* The helper's environment: the shell's own, with the job's values of
 * helper_vars in place of any the shell has.  Built before fork(), so the
 * child only execs (no allocation or shell lookups after fork).  Returns a
 * NULL-terminated array whose "NAME=value" strings it added are listed in
 * 'added' (both freed by helper_env_free), or NULL on ENOMEM.
 */
static char **helper_env (flux_shell_t *shell, char ***added)
{
    size_t n = 0, nvars = 0, k = 0, a = 0;
    char **envp, **mine;

    while (environ[n])
        n++;
    while (helper_vars[nvars])
        nvars++;
    envp = calloc (n + nvars + 1, sizeof (*envp));
    mine = calloc (nvars + 1, sizeof (*mine));
    if (!envp || !mine)
        goto nomem;
    for (size_t i = 0; i < nvars; i++) {
        const char *value = flux_shell_getenv (shell, helper_vars[i]);
        size_t len;
        if (!value)
            continue;
        len = strlen (helper_vars[i]) + strlen (value) + 2;
        if (!(mine[a] = malloc (len)))
            goto nomem;
        snprintf (mine[a++], len, "%s=%s", helper_vars[i], value);
    }
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < a && !replaced; j++) {
            size_t len = strchr (mine[j], '=') - mine[j] + 1;
            replaced = strncmp (environ[i], mine[j], len) == 0;
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < a; j++)
        envp[k++] = mine[j];
    *added = mine;
    return envp;
nomem:
    for (size_t j = 0; mine && mine[j]; j++)
        free (mine[j]);
    free (mine);
    free (envp);
    errno = ENOMEM;
    return NULL;
}

static void helper_env_free (char **envp, char **added)
{
    for (size_t j = 0; added && added[j]; j++)
        free (added[j]);
    free (added);
    free (envp);
}

/* shell.init: run the helper and wait for it (the tasks start only after
 * it has set their variables; the shell's reactor is not running yet).
 * Returns 0 if it exited 0.
 */
static int run_helper_now (flux_shell_t *shell, const char *action,
                           const struct job *job)
{
    char idbuf[32], rankbuf[16];
    const char *argv[12];
    int fds[2];
    pid_t pid;
    FILE *out;
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    int status;

    char **envp, **added;

    helper_args (COPY_OFFLOAD_FLUX, action, job, idbuf, sizeof (idbuf),
                 rankbuf, sizeof (rankbuf), argv);
    if (!(envp = helper_env (shell, &added))) {
        shell_log_errno ("cannot run the copy-offload helper");
        return -1;
    }
    if (pipe (fds) < 0) {
        shell_log_errno ("cannot run the copy-offload helper");
        helper_env_free (envp, added);
        return -1;
    }
    if ((pid = fork ()) < 0) {
        shell_log_errno ("cannot run the copy-offload helper");
        close (fds[0]);
        close (fds[1]);
        helper_env_free (envp, added);
        return -1;
    }
    if (pid == 0) {
        dup2 (fds[1], STDOUT_FILENO);
        dup2 (fds[1], STDERR_FILENO);
        close (fds[0]);
        close (fds[1]);
        execve (COPY_OFFLOAD_FLUX, (char *const *)argv, envp);
        fprintf (stderr, "copy-offload: cannot run %s: %s\n",
                 COPY_OFFLOAD_FLUX, strerror (errno));
        _exit (127);
    }
    helper_env_free (envp, added);
    close (fds[1]);
    /* 'out' and 'line' are ours until the end of this function. */
    if (!(out = fdopen (fds[0], "r"))) {
        close (fds[0]);
        shell_log_errno ("reading the copy-offload helper");
    }
    else {
        while ((len = getline (&line, &size, out)) >= 0)
            helper_line (shell, line, (int)len, true);
        free (line);
        fclose (out);
    }
    while (waitpid (pid, &status, 0) < 0) {
        if (errno != EINTR) {
            shell_log_errno ("waiting for the copy-offload helper");
            return -1;
        }
    }
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
        shell_log_error ("copy-offload helper '%s' failed (%s %d)", action,
                         WIFEXITED (status) ? "exit" : "signal",
                         WIFEXITED (status) ? WEXITSTATUS (status)
                                            : WTERMSIG (status));
        return -1;
    }
    return 0;
}

/* shell.finish: the helper runs under the shell's reactor, so its lines
 * reach the job's output as they come and the shell still answers signals
 * and kill requests; a completion reference keeps the shell (and so the
 * job's finish event) waiting until it has ended.
 */
static void helper_output_cb (flux_subprocess_t *p, const char *stream)
{
    flux_shell_t *shell = flux_subprocess_aux_get (p, HELPER_AUX);
    const char *line;
    int len;

    /* 'line' borrows from p's buffer until the next read. */
    while ((len = flux_subprocess_getline (p, stream, &line)) > 0)
        helper_line (shell, line, len, false);
}

static void helper_end (flux_subprocess_t *p)
{
    flux_shell_t *shell = flux_subprocess_aux_get (p, HELPER_AUX);

    /* p is destroyed here and not touched again; the reference may let the
     * shell exit, so it goes last.
     */
    flux_subprocess_destroy (p);
    if (flux_shell_remove_completion_ref (shell, DRAIN_REF) < 0)
        shell_log_errno ("removing the copy-offload completion reference");
}

static void helper_completion_cb (flux_subprocess_t *p)
{
    int status = flux_subprocess_status (p);

    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
        shell_log_error ("copy-offload helper 'finish' failed (%s %d)",
                         WIFEXITED (status) ? "exit" : "signal",
                         WIFEXITED (status) ? WEXITSTATUS (status)
                                            : WTERMSIG (status));
    helper_end (p);
}

static void helper_state_cb (flux_subprocess_t *p,
                             flux_subprocess_state_t state)
{
    if (state == FLUX_SUBPROCESS_FAILED) {  /* no completion callback then */
        shell_log_error ("cannot run %s: %s", COPY_OFFLOAD_FLUX,
                         flux_subprocess_fail_error (p));
        helper_end (p);
    }
}

static int run_helper_later (flux_shell_t *shell, const char *action,
                             const struct job *job)
{
    char idbuf[32], rankbuf[16];
    const char *argv[12];
    int argc = helper_args (COPY_OFFLOAD_FLUX, action, job, idbuf, sizeof (idbuf), rankbuf,
                            sizeof (rankbuf), argv);
    flux_subprocess_ops_t ops = {
        .on_completion = helper_completion_cb,
        .on_state_change = helper_state_cb,
        .on_stdout = helper_output_cb,
        .on_stderr = helper_output_cb,
    };
    flux_t *h = flux_shell_get_flux (shell);
    flux_cmd_t *cmd;
    flux_subprocess_t *p = NULL;

    /* 'cmd' is ours (flux_local_exec copies it); 'p' is owned by the
     * callbacks once it exists (helper_end destroys it).
     */
    if (!h || !(cmd = flux_cmd_create (argc, (char **)argv, environ))) {
        shell_log_errno ("cannot run the copy-offload helper");
        return -1;
    }
    for (int i = 0; helper_vars[i]; i++) {
        const char *value = flux_shell_getenv (shell, helper_vars[i]);
        if (value && flux_cmd_setenvf (cmd, 1, helper_vars[i], "%s", value) < 0)
            goto error;
    }
    if (flux_cmd_setcwd (cmd, "/") < 0
        || flux_shell_add_completion_ref (shell, DRAIN_REF) < 0)
        goto error;
    if (!(p = flux_local_exec (flux_get_reactor (h), 0, cmd, &ops))
        || flux_subprocess_aux_set (p, HELPER_AUX, shell, NULL) < 0) {
        shell_log_errno ("cannot run the copy-offload helper");
        flux_subprocess_destroy (p);
        flux_cmd_destroy (cmd);
        (void)flux_shell_remove_completion_ref (shell, DRAIN_REF);
        return -1;
    }
    flux_cmd_destroy (cmd);
    return 0;
error:
    shell_log_errno ("cannot run the copy-offload helper");
    flux_cmd_destroy (cmd);
    return -1;
}

static int job_facts (flux_shell_t *shell, struct job *job)
{
    json_t *dwattr = NULL;

    job->options = NULL;
    if (!shell
        || flux_shell_info_unpack (shell,
                                   "{s:I s:i s:{s?{s?{s?o}}}}",
                                   "jobid", &job->id,
                                   "rank", &job->rank,
                                   "jobspec",
                                     "attributes",
                                       "system",
                                         "dw", &dwattr) < 0
        || flux_shell_getopt (shell, SHELL_OPTION, &job->options) < 0)
        return -1;
    job->dw = dwattr != NULL;
    return 0;
}

static bool wants_local_server (const struct job *job)
{
    json_t *o = job->options ? json_loads (job->options, 0, NULL) : NULL;
    bool yes = o && json_object_get (o, "local-server") != NULL;

    json_decref (o);
    return yes;
}

/* shell.init: set the job's variables from the eventlog (a dw job) and
 * start its per-job server (-o copy-offload.local-server).  A failure fails
 * the job.
 */
static int job_init (flux_shell_t *shell, const struct job *job)
{
    double timeout = DEFAULT_TIMEOUT;
    flux_t *h;
    int rc = 0;

    if (job->dw) {
        if (flux_shell_getopt_unpack (shell, SHELL_OPTION, "{s?F}",
                                      "timeout", &timeout) < 0
            || timeout <= 0.) {
            shell_log_error ("-o copy-offload.timeout must be a positive "
                             "number of seconds");
            rc = -1;
        }
        else if (!(h = flux_shell_get_flux (shell))) {
            shell_log_errno ("no Flux handle");
            rc = -1;
        }
        else
            rc = read_env_event (shell, h, (flux_jobid_t)job->id, timeout);
    }
    if (rc == 0 && wants_local_server (job))
        rc = run_helper_now (shell, "start", job);
    return rc;
}

/* shell.finish: drain the job's copy-offload server.  Nothing to drain
 * without a server address (a dw job whose Workflow gave none, e.g. one that
 * did not ask for copy offload).  Never fails the job.
 */
static int job_finish (flux_shell_t *shell, const struct job *job)
{
    if ((job->dw || wants_local_server (job))
        && flux_shell_getenv (shell, "NNF_CONTAINER_PORTS"))
        (void)run_helper_later (shell, "finish", job);
    return 0;
}

/* Both callbacks: read the job's facts (which own 'options'), act, free. */
static int shell_cb (flux_plugin_t *p,
                     const char *topic,
                     flux_plugin_arg_t *args,
                     void *data)
{
    bool init = !strcmp (topic, "shell.init");
    flux_shell_t *shell = flux_plugin_get_shell (p);
    struct job job;
    int rc;

    if (job_facts (shell, &job) < 0)
        rc = init ? -1 : 0;
    else
        rc = init ? job_init (shell, &job) : job_finish (shell, &job);
    free (job.options);
    return rc;
}

int flux_plugin_init (flux_plugin_t *p)
{
    if (flux_plugin_set_name (p, FLUX_SHELL_PLUGIN_NAME) < 0
        || flux_plugin_add_handler (p, "shell.init", shell_cb, NULL) < 0
        || flux_plugin_add_handler (p, "shell.finish", shell_cb, NULL) < 0)
        return -1;
    return 0;
}

// vi:ts=4 sw=4 expandtab
