-- One word per act: charging SMS usage is "charge" in SQL as in Python. The functions of
-- the old names are dropped here; sql/functions/30_usage.sql defines charge_sms,
-- charge_sms_bulk and api_charge (a rename is a signature change: it needs this numbered
-- migration). IF EXISTS: a new database never had them.
DROP FUNCTION IF EXISTS api_deduct(uuid, text, integer, numeric, numeric, text, text, text);
DROP FUNCTION IF EXISTS deduct_credits_bulk(uuid[], integer[], numeric[], numeric, text[],
                                            text[], text[], text);
DROP FUNCTION IF EXISTS deduct_credits(uuid, numeric, integer, numeric, text, text, text,
                                       text, jsonb);
