-- sweep: expire due waiting tokens. ARGV[3] limit. Returns {"expired": count examined}.
return cjson.encode({expired = sweep(tonumber(ARGV[3]))})
