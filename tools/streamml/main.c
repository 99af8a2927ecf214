/* streamml: one binary, one subcommand per job. Every subcommand reuses the
 * modules in common/: none has its own feature or scoring code. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "suggest.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"broker", cmd_broker, "serve the embedded Kafka broker (librdkafka mock cluster)"},
    {"produce", cmd_produce, "JSON lines on stdin -> Avro records on a topic"},
    {"consume", cmd_consume, "a topic's Avro records -> JSON lines on stdout"},
    {"featurize", cmd_featurize, "events -> CSV of feature vectors (training data)"},
    {"features", cmd_features, "features check SPEC: validate a feature spec, print its plan"},
    {"predict", cmd_predict, "score a CSV (XGBoost JSON, scorecard) or .npy tensors (ONNX)"},
    {"model", cmd_model, "model inspect FILE: what a model file holds"},
    {"config", cmd_config, "config show|check: the merged configuration"},
    {"replay", cmd_replay, "backtest: a topic range or Avro files -> predictions (worker's code)"},
    {"report", cmd_report, "backtest predictions + labels -> HTML report, metrics, gates"},
    {"profile", cmd_profile, "feature CSV + model -> monitoring baseline JSON"},
    {"alerts", cmd_alerts, "follow the monitoring topic: one line per alert"},
    {"click-eval", cmd_click_eval, "replay clicks: Recall@K/MRR@K of the GRU vs popularity"},
    {"abtest", cmd_abtest, "experiment predictions + outcomes -> per-variant lift, Welch test, AUC"},
    {"baseline", cmd_baseline, "clickstream/images reference predictions -> monitoring baseline JSON"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out, "usage: streamml <command> [options]   (streamml <command> --help)\n\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nWorkers are separate binaries (each with --help): streamml-transactions,\n"
                 "streamml-clickstream, streamml-images.\n"
                 "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "streamml: a command is needed\nsee streamml --help\n");
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        cli_version(stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    {
        const char *names[NCOMMANDS], *best;
        for (size_t i = 0; i < NCOMMANDS; i++)
            names[i] = commands[i].name;
        best = sug_closest(argv[1], names, NCOMMANDS);
        if (best)
            fprintf(stderr, "streamml: unknown command \"%s\"; did you mean %s?\n", argv[1], best);
        else
            fprintf(stderr, "streamml: unknown command \"%s\"\n", argv[1]);
        fprintf(stderr, "see streamml --help\n");
    }
    return EXIT_USAGE;
}
