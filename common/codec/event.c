#include "event.h"

#include <math.h>
#include <string.h>

void event_txn_init(struct txn_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->amount = ev->income = ev->expenses = ev->assets = ev->debt = NAN;
    ev->price = ev->term_months = ev->seniority_years = ev->age = NAN;
    ev->credit_limit = ev->credit_used = ev->payments_on_time = ev->payments_late = NAN;
    ev->inquiries_6m = ev->accounts_open = ev->accounts_opened_12m = NAN;
    ev->bankruptcies = ev->collections = NAN;
    ev->oldest_account_months = ev->avg_account_age_months = NAN;
    ev->past_records = -1;
    ev->label = -1;
}
