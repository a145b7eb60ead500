"""The curated patterns: direct statements of suicide, self-harm and danger, and idiom guards.

These regular expressions are one input of the crisis detector
(mailer/rules/crisis.py), next to the warning-sign vocabulary
(mailer/rules/signs.py). They catch the direct statements a sign list
writes as many separate phrases ("kill myself", "he hits me", "cutting
again") with one expression each, in every tense and person that matters.
A pattern firing is urgent on its own. The guards blank out idioms that
would otherwise trip a pattern or a sign phrase, before anything is
searched; each names what it protects against. Patterns are written for the
normalised text: lower case, straight apostrophes (written ``'?`` where
people drop them), plain hyphens.
"""

from __future__ import annotations

__all__ = ["GUARDS", "SUICIDE_PATTERNS", "SELF_HARM_PATTERNS", "DANGER_PATTERNS"]

# ---------------------------------------------------------------------------
# Shared vocabulary

# People who commonly harm or threaten a letter writer. Bosses, teachers and
# coaches are left out on purpose: "my boss will kill me" is almost always an
# idiom, and the violent verbs below are specific enough without them.
_PERSON = (
    r"(?:he|she|they|husband|wife|partner|spouse|boyfriend|girlfriend|bf|gf|"
    r"fianc[eé]e?|ex|ex-?(?:husband|wife|partner|boyfriend|girlfriend)|"
    r"dad|father|step-?dad|step-?father|mum|mom|mother|step-?(?:mum|mom|mother)|"
    r"brother|sister|son|daughter|uncle|aunt|cousin|grand(?:father|dad|pa)|"
    r"landlord|flatmate|roommate|housemate|neighbou?r)"
)
# Whom the harm is aimed at: the writer, their children, or someone they
# write about ("he hits her").
_VICTIM = (
    r"(?:me|us|her|him|them|"
    r"(?:my|our|the) (?:kids?|children|child|son|daughter|baby|babies|mum|mom|mother|sister|wife))"
)
_MODAL = (
    r"(?:'ll|'d| will| would| might| could| may| is going to| 's going to| was going to|"
    r" is gonna| 's gonna| was gonna| wants? to| wanted to| tried to| is trying to| keeps trying to)"
)
_MEDS = (
    r"(?:pills|tablets|meds|medication|medicine|capsules|painkillers|antidepressants|"
    r"paracetamol|tylenol|ibuprofen|aspirin|insulin)"
)
_SELF = r"(?:my ?self|him ?self|her ?self|them ?sel(?:f|ves))"


# ---------------------------------------------------------------------------
# Idiom guards: phrases blanked out before matching. Only idioms that would
# otherwise trip a pattern below belong here; each names the pattern it
# protects against.

GUARDS: tuple[tuple[str, str], ...] = (
    # "want to die" / "ready to die"
    ("die-of-x", r"\bdie (?:of|from) (?:embarrassment|shame|laughter|laughing|boredom|envy|"
                 r"jealousy|cuteness|curiosity|happiness|heat|hunger|thirst)\b"),
    ("dead-certain", r"\bdead (?:certain|sure|set|serious|tired|right|wrong|on time|last|ahead|easy|simple|quiet|boring|funny|gorgeous)\b"),
    ("embarrassed-die", r"\b(?:embarrass\w*|mortified|humiliated|cringing|cringed)\b[^.!?|]{0,20}?\bwant(?:ed)? to die\b"),
    ("die-laughing", r"\bdie (?:laughing|happy|on (?:this|that) hill)\b"),
    # "kill myself"
    ("kill-myself-working", r"\bkill(?:ing)? ?my ?self (?:laughing|trying|working|at (?:work|the gym)|"
                            r"for (?:this|my|the|a) (?:job|company|boss|team|degree|exam)|"
                            r"to (?:finish|get|meet|make|keep|pay|please|impress|earn|save|hit|pass))\b"),
    # "overdose": someone's past death by overdose is a grief topic (other
    # patterns still catch the writer's own distress in the same letter).
    ("died-of-overdose", r"\bdied (?:of|from|after) (?:an? |his |her )?(?:accidental )?overdose\b"),
    # "cut myself", "burn myself", "hurt myself" (self-harm)
    ("cut-myself-off", r"\bcut(?:ting)? ?my ?self (?:off|some slack|a break|short|shaving|"
                       r"while (?:cooking|shaving|chopping|gardening)|cooking|chopping|"
                       r"on (?:a|an|the|some) )"),
    ("burn-out", r"\b(?:burn|burnt|burned|burning) ?(?:my|him|her|them) ?sel(?:f|ves) out\b"),
    ("burn-cooking", r"\b(?:burn|burnt|burned) ?my ?self (?:cooking|on (?:the|a) (?:oven|stove|hob|kettle|iron|pan|tray))\b"),
    ("hurt-myself-accident", r"\bhurt ?my ?self (?:at the gym|playing|lifting|skiing|running|cycling|"
                             r"exercising|falling|in a fall|on the (?:stairs|ice))\b"),
    ("fell-and-hurt", r"\b(?:fell|slipped|tripped) and hurt ?my ?self\b"),
    ("only-hurting-myself", r"\b(?:only|just) (?:be |am |'m )?hurting ?my ?self\b"),
    ("hurting-myself-by", r"\bhurting ?my ?self by (?!cutting|burning|scratching|starving|hitting|punching)\w+ing\b"),
    ("sick-with-worry", r"\bmak(?:e|es|ing) ?my ?self sick (?:with|from) (?:worry|worrying|stress|nerves)\b"),
    # physical violence with a person subject
    ("hit-me-up", r"\bhit (?:me|him|her|us|them) up\b"),
    ("it-hit-me", r"\b(?:it|this|that|reality|realisation|realization|truth|news|grief|thought|idea)"
                  r"(?: (?:really|suddenly|finally|just|all|only))? hits? (?:me|him|her)\b"),
    ("beat-me-at", r"\bbeat (?:me|him|her|us|them) (?:at|to|by)\b"),
    ("beat-me-in-game", r"\bbeat (?:me|him|her|us|them) in (?:a |the )?(?:\w+ )?(?:race|game|match|round|final|argument|debate)\b"),
    ("kicked-me-out", r"\bkick(?:ed|s)? (?:me|him|her|us|them) out\b"),
    # "suicidal"
    ("suicidal-to", r"\bit(?:'d|'s| would| will| is)(?: be)?(?: \w+)? suicidal to\b"),
)


# ---------------------------------------------------------------------------
# Patterns, one named list per category.

SUICIDE_PATTERNS: tuple[tuple[str, str], ...] = (
    # Direct statements.
    ("kill-self", r"\bkill?(?:ing)? ?" + _SELF + r"\b|\bkilled ?my ?self\b"),
    ("end-life", r"\bend(?:ing)? (?:my|his|her|their) (?:own )?li(?:fe|ves)\b"),
    # "take my life", but not "take my life back / in a new direction".
    ("take-life", r"\b(?:take|taking) (?:my|his|her|their) (?:own )?life\b"
                  r"(?! (?:back|in|into|to|forward|seriously|more|advice|lessons?|over|decisions?|savings|story|stories|for granted)\b)"),
    ("want-to-die", r"\b(?:want(?:s|ed)?|wanna|wish(?:ed)?|wishing|ready|deserve[sd]?|prefer|pray(?:ing)?)"
                    r" (?:to )?(?:just |simply |finally |really )?(?:die|be dead|not be alive|not exist|stop existing)\b"),
    ("wish-dead", r"\bwish(?:ed)? (?:that )?i(?:'d)? (?:could )?(?:just )?(?:was dead|were dead|had died|die|disappear|"
                  r"was never born|had never been born|'d never been born|never existed|didn'?t exist|"
                  r"wasn'?t alive|weren'?t alive|wasn'?t here any ?more)\b"),
    # "don't want to be alive / live / exist / wake up", excluding
    # "don't want to live with my parents", "... wake up early".
    ("not-want-to-live", r"\b(?:don'?t|do not|doesn'?t|does not|no longer|never)(?: really| even)? (?:want|wanna|wants)"
                         r" (?:to )?(?:be alive|live|exist|be here|wake up|keep living)\b"
                         r"(?! (?:in|at|with|near|there|together|abroad|alone|early|next|on|like that)\b)"),
    ("not-want-to-go-on", r"\b(?:don'?t|do not|no longer) (?:want|wanna) to (?:go on|keep going|carry on)"
                          r"(?= ?(?:any ?more|any longer|like this|living|[.,!?;]|$))"),
    # "can't go on" only when nothing follows that makes it literal
    # ("can't go on holiday", "can't go on walks").
    ("cant-go-on", r"\bcan'?t (?:go on|keep going|carry on)"
                   r"(?= ?(?:like this|living|any ?more|any longer|much longer|without|with (?:my )?life|[.,!?;|]|$))"
                   r"|\bcan'?t (?:keep living|live like this|do this any ?more|do this any longer|take (?:this|the) pain any ?more)\b"),
    ("no-reason-to-live", r"\bno (?:reason|point|purpose) (?:to|in|for) (?:live|living|go on|going on|carry on|"
                          r"carrying on|be alive|being alive|be here|being here|staying alive|exist|existing)\b"),
    ("nothing-to-live-for", r"\bnothing (?:left )?to live for\b"),
    ("point-of-living", r"\bwhat'?s the point (?:of|in) (?:living|life|going on|being alive|being here|carrying on|anything any ?more)\b"),
    ("not-worth-living", r"\b(?:life|living)(?: is| isn'?t| is not| is no longer|'s)? (?:not |no longer )?worth (?:living|it any ?more)\b"
                         r"|\bnot worth living\b"),
    ("tired-of-living", r"\b(?:tired|sick) of (?:living|being alive|life)\b"
                        r"(?! (?:in|with|at|on|like|off|under|here|there|alone|together|admin|paycheck|out of|from)\b)"),
    ("no-way-out", r"\b(?:see|there'?s|there is) no way out\b"),
    ("better-off-without-me", r"\bbetter off (?:without me|dead|with me gone|when i'?m gone|if i (?:was|were|wasn'?t|weren'?t|just|died|disappeared))\b"
                              r"|\b(?:happier|better) (?:without me|with me gone|if i (?:was|were|wasn'?t|weren'?t|just|died|disappeared))\b"),
    ("notice-if-gone", r"\b(?:notice|care|miss me) if i (?:was|were|died|disappeared|was gone|were gone)\b"),
    ("burden", r"\b(?:i'?m|i am|i feel (?:like )?(?:i'?m )?|i'?ve become|i have become) (?:such |just |only |nothing but )?(?:a|an) (?:\w+ )?burden\b"),
    ("suicidal", r"\bsu[iu]?c[iu]?d(?:al|ial)\b"),
    ("suicide-intent", r"\b(?:think(?:ing)?|thought|thoughts|considering|considered|contemplat(?:e|ing|ed)|plann?(?:ed|ing)?|"
                       r"attempt(?:s|ed|ing)?|tr(?:y|ied|ying)|want(?:s|ed)?|wanna|going|gonna|urges?)"
                       r" (?:about |of |on |to )?(?:commit(?:ting)? )?su[iu]?c[iu]?de\b"),
    ("commit-suicide", r"\b(?:commit|committing) su[iu]?c[iu]?de\b"),
    ("suicide-noun", r"\bsu[iu]?c[iu]?de (?:attempts?|notes?|plans?|letters?|thoughts?|ideation|hotline|helpline|line|"
                     r"crisis|watch|(?:has |keeps |)(?:crossed|crosses|crossing|entered|on) my mind)\b"),
    ("attempt", r"\battempt(?:ed|ing)? to (?:kill|end|take)\b"),
    ("slang", r"\bunaliv(?:e|ing|ed)\b|(?<!\d)(?<!\d )\bkms\b|\bsewer ?slide\b"),
    # Passive ideation: sleep, accidents, disappearing.
    ("not-wake-up", r"\b(?:go to sleep|fall asleep|sleep|sleeping|close my eyes) and (?:never|not|don'?t|wouldn'?t) (?:wake up|open them)\b"
                    r"|\b(?:hope|hoping|pray|praying|wish) (?:that )?i (?:don'?t|won'?t|wouldn'?t|never|do not|will not) wake up\b"
                    r"(?! (?:to|early|late|before|at|in|with|next|and find)\b)"
                    r"|\b(?:not|never) (?:to )?wake up again\b|\bsleep forever\b"),
    ("wouldnt-mind-dying", r"\b(?:wouldn'?t|would not|won'?t|will not) (?:mind|care) (?:dying|being dead|not waking up|"
                           r"if i (?:died|was dead|were dead|didn'?t wake up|never woke up))\b"),
    ("hit-by-bus", r"\bif (?:a|the) (?:bus|car|train|truck|lorry) (?:hit|hits|ran over|runs over|killed|kills) me\b"),
    ("disappear-forever", r"\bdisappear(?:ed|ing)? (?:forever|for good|permanently)\b"),
    ("want-it-to-stop", r"\b(?:want|wish|need) (?:it all|everything|the pain|all of it|life) to (?:just )?(?:stop|end)\b"),
    ("not-be-around", r"\b(?:won'?t|will not|may not|might not|not going to) be (?:here|around|alive) "
                      r"(?:much longer|for (?:much|very) long|by|next|to see|for christmas|tomorrow)\b"),
    ("end-it-all", r"\bend(?:ing|ed)? (?:it all|everything|it (?:tonight|today|now|forever|for good)|things (?:tonight|for good|once and for all))\b"),
    ("thinking-of-ending-it", r"\b(?:think|thinking|thought|considering|planning|plan) (?:of|about|on)? ?ending (?:it|things)\b(?! (?:with|between|off)\b)"),
    ("thinking-about-dying", r"\b(?:think|thinking|thought|thoughts|fantasi[sz]\w*|dream\w*|obsess\w*) (?:about|of) (?:dying|death|being dead|"
                             r"my (?:own )?death|not being (?:here|alive|around)|not existing|killing myself|ending (?:it|my life|things)|disappearing for good)\b"),
    ("if-i-wasnt-here", r"\bif i (?:just |simply )?(?:wasn'?t|weren'?t|was not|were not|was no longer|were no longer) (?:here|around|alive|in the picture)\b"),
    ("cant-see-future", r"\b(?:don'?t|can'?t|do not|cannot) (?:see|imagine|picture) (?:myself|me) (?:being )?(?:alive|here|around|living|making it|growing old)\b"
                        r"(?! (?:in|with|there|abroad|together|like that)\b)"),
    ("already-gone", r"\b(?:i'?m|i am|i feel (?:like )?(?:i'?m )?)(?: already)? (?:dead|gone) inside\b|\bi'?m already (?:gone|dead)\b"),
    ("plan-and-date", r"\b(?:a|the) plan and (?:a|the) (?:date|means|method|day)\b|\bi(?:'ve| have)? (?:picked|set|chosen|chose) (?:a|the) (?:date|day)\b(?! for\b)"),
    ("rope", r"\b(?:found|bought|hid|hidden|hiding|hides|tied) (?:a |the |some )?(?:rope|noose)\b|\brope\b.{0,40}?\b(?:garage|shed|closet|wardrobe|attic|loft|beam|hook)\b"),
    ("tracks", r"\b(?:train|railway|rail) tracks?\b.{0,80}?\b(?:easy|easier|jump|step|lie|lying|end it|thinking)\b"),
    ("how-easy", r"\b(?:think|thinking|thought|realised|realized|noticed) (?:about )?how easy it would be\b"
                 r"(?! to (?:just )?(?!end|die|jump|step|let go|crash|swerve|drive|stop|disappear|not|go under|fall)\w)"),
    ("stay-alive", r"\b(?:struggle|struggling|fight|fighting|battle|battling) to (?:stay|keep myself) alive\b"
                   r"|\bhow (?:much )?longer i can (?:keep going|go on|hold on|do this|last|take this)\b"),
    ("wish-didnt-have-to", r"\bwish i (?:didn'?t|did not) have to (?:wake up|come up|be here|exist|live|go on|keep going)\b"),
    ("done-with-life", r"\b(?:done|finished|through) with (?:life|living|being alive)\b"),
    ("life-pointless", r"\b(?:life|everything|living|my life) (?:feels|is|seems|has become) (?:so |completely |totally |just )?(?:pointless|meaningless|hopeless)\b"),
    ("my-funeral", r"\b(?:come|go|turn up|show up|cry|be) (?:to|at) my funeral\b"),
    ("want-to-disappear", r"\bwant(?:ed)? to (?:just )?disappear\b(?! (?:for|to|into|from|on|with|off|somewhere|abroad)\b)"
                          r"|\b(?:just|to|rather|simply) not exist\b"),
    ("last-letter", r"\b(?:won'?t|will not) be (?:writing|around|here|bothering (?:you|anyone)) (?:again|any ?more|any longer)\b"
                    r"|\bthis (?:is|will be) my last (?:letter|message|email|note)\b|\bby the time you read this\b"),
    ("hoping-something-happens", r"\bhop(?:e|ing) (?:something|someone) (?:happens|hits me|kills me)\b"
                                 r"|\bhop(?:e|ing) (?:that )?i (?:crash|die|don'?t make it|get hit)\b"
                                 r"|\bstopped taking my (?:meds|medication|pills|insulin)\b.{0,30}?\bon purpose\b"),
    ("how-id-do-it", r"\bhow (?:i'?d|i would|i'?ll|i will|to) do it\b.{0,60}?\b(?:pills|tablets|rope|bridge|car|gun|knife|jump|overdose)\b"),
    ("pills-and-alcohol", r"\b(?:drank|drunk|drinking)\b.{0,60}?\b(?:took|taken|swallowed)\b.{0,40}?\b" + _MEDS + r"\b"
                          r"|\b(?:took|taken|swallowed)\b.{0,40}?\b" + _MEDS + r"\b.{0,60}?\b(?:drank|vodka|alcohol|feel weird|feel strange|can'?t stay awake)\b"),
    ("bleed-out", r"\bbleed(?:ing)? out\b"),
    ("wish-illness", r"\bwish(?:ing|ed)? i (?:had|got|could get|would get) (?:cancer|a terminal \w+|an? (?:fatal|terminal) \w+)\b"
                     r"|\bso (?:it|this|everything) (?:would|could|will) (?:all )?(?:be over|end|stop)\b"),
    ("look-like-accident", r"\b(?:make|making|made) it look like an accident\b"
                           r"|\b(?:crash|crashing|wreck|wrecking) (?:the|my) car\b.{0,60}?\b(?:accident|on purpose|deliberately)\b"),
    ("only-thing-keeping-me-alive", r"\b(?:only|last) (?:thing|reason|person|one)s? (?:keeping me|that keeps? me|i'?m still) (?:alive|here|going)\b"
                                    r"|\bonly reason i'?m still (?:alive|here)\b"),
    ("under-the-train", r"\b(?:go|going|step|stepping|jump|jumping|throw myself|lie|lying) under (?:it|the train|a train|the bus|a bus|a lorry|a truck)\b"),
    ("do-it-tonight", r"\bi(?:'?m| am)? (?:going to|gonna) do it (?:tonight|today|tomorrow)\b(?! ?[:-])"),
    ("dont-deserve-to-live", r"\b(?:don'?t|do not|doesn'?t) deserve to (?:live|be alive|be here|exist)\b"),
    ("join-the-dead", r"\b(?:died|dead|passed|killed (?:him|her|them)sel(?:f|ves)|su[iu]?c[iu]?de|funeral|grave|lost (?:him|her))\b"
                      r".{0,200}?\b(?:want|wanna|wish|long|ready|going|need)(?:ed|s|ing)? to (?:join|be with) "
                      r"(?:(?:him|them)\b(?! (?:at|for|on|in|and)\b)|her\b(?= ?(?:again|now|there|forever|soon|so|in heaven|[.,!?;]|$)))"),
    # Plans and means.
    ("take-all-pills", r"\b(?:take|taking|took|swallow(?:ing|ed)?|down(?:ing|ed)?) (?:all|every one|the rest|a (?:whole|full) (?:bottle|box|packet|strip)|a (?:load|lot|bunch|handful)|loads|lots|handfuls|too many)"
                       r" (?:of )?(?:my |the |these |those |her |his )?(?:\w+ )?" + _MEDS + r"\b"
                       r"(?! (?:on time|as prescribed|every|regularly|correctly|properly|daily|each)\b)"),
    ("stockpile-pills", r"\b(?:saving|saved|stockpil\w*|hoard\w*|stash\w*) (?:up )?(?:all )?(?:my |the |some |her |his )?(?:\w+ )?" + _MEDS + r"\b"),
    ("pills-in-front", r"\b" + _MEDS + r" (?:in front of me|in my hand|lined up|counted out)\b"),
    ("overdose", r"\boverdos\w*\b|\bod'?(?:d|ed|ing) on\b"),
    ("how-many-pills", r"\bhow many (?:\w+ ){0,3}?" + _MEDS + r"\b[\w' ]{0,30}?\b(?:take|kill|lethal|fatal|enough)\b"),
    ("lethal-dose", r"\b(?:lethal|fatal|deadly) dose\b"),
    ("ways-to-die", r"\b(?:easiest|easy|quickest|quick|painless|best|fastest|surest|simplest) ways? to (?:die|kill myself|end (?:it|my life|things))\b"
                    r"|\bhow to (?:kill myself|end my life|die painlessly|commit su[iu]?c[iu]?de|overdose)\b"),
    ("hang", r"\bhang(?:ing|ed)? " + _SELF + r"\b|\bnoose\b"),
    ("jump", r"\bjump(?:ing|ed)? (?:off|from|in front of|under) (?:a |the |my )?(?:\w+ )?"
             r"(?:bridge|building|roof|cliff|balcony|train|bus|car|lorry|truck|tower|window|ledge|platform|multi-?stor(?:e)?y)\b"),
    ("on-the-edge", r"\b(?:stood|standing|stand|sat|sitting) (?:on|at) (?:the |a )(?:edge of (?:the |a )?)?"
                    r"(?:bridge|ledge|roof|rooftop|cliff|railway|tracks|balcony railing)\b"),
    ("in-front-of-traffic", r"\b(?:step|stepping|stepped|walk|walking|walked) (?:out )?in front of (?:a |the )(?:train|bus|car|lorry|truck)\b"),
    ("crash-car", r"\b(?:drive|driving|drove|crash|crashing|swerve|swerving) (?:my car |the car )?(?:into|off) (?:a |the )"
                  r"(?:tree|wall|bridge|cliff|river|lake|oncoming)\b"),
    ("slit-wrists", r"\b(?:slit|slash|slashing) (?:my|his|her) (?:wrists?|throat)\b"),
    ("gun-to-head", r"\b(?:gun|pistol|rifle|knife) (?:to|against) (?:my|his|her) (?:own )?(?:head|temple|mouth|wrist|throat)\b"),
    ("goodbye-note", r"\b(?:goodbye|farewell|su[iu]?c[iu]?de) (?:notes?|letters?|messages?|videos?|texts?)\b"),
    ("saying-goodbye", r"\bsa(?:y|ying|id) (?:my )?goodbyes? to (?:everyone|everybody)\b(?! at\b)"),
    ("giving-away", r"\bg(?:ive|iving|iven|ave) away (?:all )?my (?:things|stuff|belongings|possessions|pets?|cats?|dogs?)\b"
                    r"|\bg(?:ive|iving|iven|ave) (?:all )?my (?:things|stuff|belongings|possessions|pets?|cats?|dogs?) (?:away|to)\b"
                    r"(?![^.!?|]{0,40}?\b(?:while|until|for the (?:weekend|week|holidays?)|on holiday|when we)\b)"),
    ("affairs-in-order", r"\b(?:put|putting|getting|get) my affairs in order\b"),
    # Someone else's suicide threat or plan (future or present, not past:
    # "killed himself" in a grief letter is handled by join-the-dead).
    ("third-person-threat", r"\b(?:said|says|saying|threaten(?:s|ed|ing)?|talk(?:s|ed|ing)? about|keeps? (?:saying|talking about))"
                            r"(?: (?:that )?(?:he|she|they)(?:'ll|'d| will| would| wants? to| is going to))? (?:to )?"
                            r"(?:kill|killing|end|ending|hurt|hurting) (?:him|her|them)sel(?:f|ves)\b"),
)

SELF_HARM_PATTERNS: tuple[tuple[str, str], ...] = (
    ("harm-self", r"\b(?:cut|cuts|cutting|burn|burns|burning|burnt|burned|hurt|hurts|hurting|harm|harms|harming|"
                  r"scratch(?:es|ed|ing)?|hit|hits|hitting|punch(?:es|ed|ing)?|bruis(?:e|es|ed|ing)|starv(?:e|es|ed|ing)|"
                  r"stab(?:s|bed|bing)?|injur(?:e|es|ed|ing)|mutilat(?:e|es|ed|ing)) ?" + _SELF + r"\b"),
    ("self-harm-word", r"\bself[- ]?(?:harm\w*|injur\w*|mutilat\w*)\b"),
    ("cutting-again", r"\bcutting (?:again|my (?:arms?|wrists?|legs?|thighs?|skin|stomach|hips?))\b"),
    ("started-cutting", r"\b(?:started|start|stopped|stop|quit|back to|relapsed into|relapse into|been|was|is|has been) cutting\b"
                        r"(?! (?:back|down|corners?|ties|out|carbs|sugar|hair|costs|my hair|the grass|class|school|it close|in line|the|a|his|her|their|our|your|through|across|edge)\b)"),
    ("cut-body", r"\b(?:cut|cuts|cutting|burn|burns|burning|burnt|burned|carv(?:e|es|ed|ing)|slic(?:e|es|ed|ing)|scratch(?:es|ed|ing)?)"
                 r" (?:my|his|her|their) (?:arms?|wrists?|legs?|thighs?|skin|stomach|hips?|chest)\b"),
    ("implement-on-skin", r"\b(?:cigarettes?|lighter|razors?|blades?|compass|scissors)\b (?:on|to|into|against) (?:my|his|her) (?:arms?|wrists?|legs?|thighs?|skin|stomach|hips?)\b"),
    ("keeps-a-blade", r"\b(?:keep|keeps|carry|carries|hide|hides|hid|hidden|have|has) (?:a |my |the |some )?(?:razors?|blades?|lighter|scissors)\b"
                      r".{0,60}?\b(?:for when|in case|when (?:it|things) gets?|nobody knows|no one knows)\b"),
    ("person-cuts", r"\b(?:she|he|they|girlfriend|boyfriend|daughter|son|friend|sister|brother|partner|wife|husband)"
                    r"(?: still| has been| 's been| started| starts)? cuts(?= (?:and|but|again|herself|himself|themselves)\b|[.,!?;|]|$)"),
    ("scars", r"\b(?:scars?|marks|cuts|burns) (?:on|from|all over) (?:my|his|her|their) (?:arms?|wrists?|legs?|thighs?|stomach|hips?)\b"
              r"|\bfresh (?:cuts|scars|wounds|blood)\b"),
    ("until-bleed", r"\buntil (?:i|it|they|my \w+|her \w+|his \w+) (?:bleeds?|bruises?)\b|\bmake (?:my|him|her)self bleed\b"),
    ("purging", r"\bmak(?:e|es|ing) ?(?:my|him|her) ?self (?:throw up|sick|vomit|puke)\b|\bpurg(?:e|es|ed|ing) after\b"),
    ("relapse-blade", r"\brelaps\w*\b.{0,100}?\b(?:blade|razor|cut|cutting|cuts)\b"
                      r"|\b(?:blade|razor)s?\b.{0,100}?\brelaps\w*\b"),
)

DANGER_PATTERNS: tuple[tuple[str, str], ...] = (
    # "my husband hits me", "he sometimes beats her", "she slapped me".
    ("violence", r"\b" + _PERSON + r"\b(?:'s|'d|'ll|'ve)?(?: [\w']+){0,3}? "
                 r"(?:hit|hits|hitting|beat|beats|beating|beaten|punch(?:ed|es|ing)?|slap(?:ped|s|ping)?|kick(?:ed|s|ing)?|"
                 r"chok(?:e|ed|es|ing)|strangl(?:e|ed|es|ing)|shov(?:e|ed|es|ing)|smack(?:ed|s|ing)?|headbutt(?:ed|s)?|"
                 r"rap(?:e|ed|es|ing)|molest(?:ed|s|ing)?|assault(?:ed|s|ing)?|bit|bites|burn(?:ed|t|s)|throttl(?:e|ed|es)) "
                 + _VICTIM + r"\b"),
    ("physical-hurt", r"\bphysically (?:hurt|hurts|harm|harms|harmed|hurting|attack\w*|abus\w*) " + _VICTIM + r"\b"
                      r"|\bhurts? (?:me|us|her|him) physically\b"),
    ("pushed-down", r"\b(?:push|pushed|pushes|pushing|shoved|threw|throws|thrown|dragged|drags) (?:me|her|us|him) "
                    r"(?:down|into|against|over|off|onto|across|out of|to the (?:floor|ground))\b"),
    ("grabbed-throat", r"\b(?:grabbed|grabs|held|holds|pinned|pins) (?:me|her|us) (?:by the (?:throat|neck|hair|arms?)|down|against)\b"),
    ("threat", r"\b(?:threat(?:en(?:s|ed|ing)?)?|threats?) (?:to )?(?:kill|hurt|harm|shoot|stab|beat|strangle|burn (?:me|us|her|him|down|the house)|"
               r"break (?:my|her|his|your) (?:arms?|legs?|neck|jaw|nose|face|bones?|fingers?|ribs?))\b"
               r"|\bdeath threats?\b"),
    ("said-he-would", r"\b(?:said|says|told me|tells me|swore|swears|warned(?: me)?|texted|texts|screamed|shouted)(?: [\w']+){0,3}?"
                      r" (?:that )?(?:he|she|they|" + _PERSON + r")" + _MODAL + r"?(?: \w+)? "
                      r"(?:kill|hurt|harm|shoot|stab|beat|strangle|break (?:my|your|her|his)) " + r"(?:me|us|the kids|my|our|you|her|him|them)\b"
                      r"(?! ?(?:feelings|pride|ego|career|chances|reputation|heart)\b)"),
    ("will-kill-me", r"\b" + _PERSON + r"\b" + _MODAL + r"(?: \w+)? (?:kill|stab|shoot|strangle|hurt|beat|burn) " + _VICTIM + r"\b"),
    ("if-i-call-police", r"\bif i (?:ever )?(?:call|phone|ring|tell|go to|report (?:it|him|her) to) (?:the )?(?:police|cops|anyone),? "
                         r"(?:he|she|they)(?:'ll|'d| will| would| is going to| is gonna)\b"),
    ("throws-things", r"\bthr(?:ows?|ew|owing) (?:things|stuff|plates|furniture|chairs?|bottles?|glasses|a (?:chair|bottle|glass|plate|knife)) at (?:me|us|her|him|my|the kids)\b"),
    ("broke-in", r"\b(?:broke|breaks|breaking|broken) into (?:my|our) (?:flat|house|home|apartment|room|place)\b"),
    ("voices", r"\bvoices? (?:telling|tell|that tell|tells) (?:him|her|them|me) to (?:hurt|kill|harm|attack)\b"),
    ("scared-for-kids", r"\b(?:scared|afraid|frightened|terrified) for (?:my|our|the) (?:\w+ )?(?:kids|children|son|daughter|baby|safety|life|lives)\b"),
    ("night-visits", r"\bcomes? into (?:my|her|his) (?:room|bed|bedroom) at night\b|\b(?:gets|got|climbs?|climbed) into (?:my|her) bed\b"),
    ("kill-us", r"\bkill (?:us all|the kids|the children|my kids|my children|the baby|my baby)\b"),
    ("fear-harm", r"\b(?:afraid|scared|terrified|frightened|fearful|petrified|fear)(?: that)? (?:he|she|they|my \w+)" + _MODAL + r"?"
                  r"(?: \w+)? (?:hurt|kill|harm|hit|beat|attack|find|rape) " + _VICTIM + r"\b"),
    ("fear-what-next", r"\b(?:afraid|scared|terrified|frightened|petrified) of what (?:he|she|they)(?:'ll|'d| will| would| might| could| is going to) do\b"),
    ("afraid-of-person", r"\b(?:afraid|scared|terrified|frightened|petrified) (?:to death )?of (?:my |our )?" + _PERSON + r"\b(?!'s|-in-law)"),
    ("scared-to-go-home", r"\b(?:afraid|scared|terrified|frightened) (?:to go home|to be alone with|to leave (?:him|her|them)|to be at home)\b"),
    ("fear-for-life", r"\b(?:fear|fearing|feared|afraid|scared|worried) for (?:my|our|her|his|the kids') (?:life|lives|safety)\b"),
    ("not-safe", r"\b(?:don'?t|do not|no longer|never|can'?t) feel safe (?:at home|in my (?:own )?(?:home|house|flat|apartment|bed)|"
                 r"with|around|near|when (?:he|she)|living with|any ?more)\b"
                 r"|\bfeel unsafe (?:at home|with|around|in my)\b"
                 r"|\b(?:i'?m|i am|we'?re|we are|the kids are|my kids are|she'?s|she is) not safe\b"
                 r"|\bnot safe (?:at home|in (?:my|our|this) (?:own )?(?:home|house|flat))\b"),
    ("abuse", r"\b(?:abus(?:es|ed|ing)|abuse) (?:me|us|her|him|the kids|my kids|the children|my children|my son|my daughter)\b"
              r"|\b(?:was|been|being|am|is|got) (?:physically |sexually |emotionally |verbally )?abused\b"
              r"|\b(?:victim|survivor|experiencing|suffering|living with|escap\w*|flee\w*|fled|report\w*|refuge|shelter|in a)\b"
              r".{0,30}?\bdomestic (?:abuse|violence)\b"
              r"|\b(?:is|was) (?:this|it|that) domestic (?:abuse|violence)\b|\bit'?s domestic (?:abuse|violence)\b"
              r"|\b(?:abusive|violent) (?:\w+ )?(?:husband|wife|partner|boyfriend|girlfriend|ex|father|dad|step-?dad|step-?father|"
              r"mother|mum|mom|relationship|marriage|home|household|family)\b"
              r"|\b" + _PERSON + r"(?:'s| is| was| has been| can be| gets| becomes| got)(?: \w+)? (?:abusive|violent)\b"),
    ("sexual-violence", r"\b(?:was|been|got|being) (?:raped|sexually assaulted|molested)\b"
                        r"|\bsexually (?:assault\w*|abus\w*)\b"
                        r"|\bforc(?:es|ed|ing) me (?:to have sex|into sex)\b"
                        r"|\btouch(?:es|ed|ing)? me (?:inappropriately|when i (?:don'?t|didn'?t) want|without)\b"
                        r"|\bkeeps? (?:grabbing|touching|groping) me\b|\bgrop(?:es|ed|ing) me\b"),
    ("stalking", r"\bstalk(?:s|ed|ing)? (?:me|us|her)\b|\b(?:been|is|was|keeps?) stalking\b|\b(?:a|my|her) stalker\b"
                 r"|\bfollow(?:s|ed|ing) me (?:home|everywhere|to work|around)\b"
                 r"|\b(?:turns?|turned|turning|shows?|showed|showing) up (?:outside |at )(?:my|our) (?:house|home|work|door|flat|office|school)\b"
                 r"|\btrack(?:s|ed|ing)? my (?:phone|location|car)\b|\btracker on my\b"
                 r"|\bknows where i live\b"),
    ("coercive-control", r"\block(?:s|ed)? (?:me|us|her|the kids) (?:in|out)\b"
                         r"|\bwon'?t let me (?:leave|go out|see my (?:friends|family)|have (?:my own )?money|use the phone)\b"
                         r"|\b" + _PERSON + r"\b(?:'s|'d)?(?: \w+){0,2}? (?:takes?|took|has taken|keeps?) (?:away )?my (?:phone|passport|money|bank card|bank cards|wages)\b"),
    ("weapon", r"\b(?:pulled|held|holds|pointed|points|waved|put) (?:a|his|her) (?:knife|gun|blade) (?:at|on|to|against) (?:me|my|us|her|him)\b"
               r"|\b(?:knife|gun) to my (?:throat|head)\b"),
    ("neck", r"\b(?:hands?|arms?|fingers|belt|rope|cord) (?:around|round|on|at|to) (?:my|her|his) (?:neck|throat)\b"),
    ("adult-touches-me", r"\b(?:step-?(?:dad|father|mum|mom|mother)|uncle|aunt|cousin|grand(?:father|dad|pa)|"
                         r"(?:mum|mom|mother)'s (?:boyfriend|partner|husband)|(?:dad|father)'s (?:girlfriend|partner|wife)|"
                         r"teacher|coach|priest|babysitter|tutor|landlord) touch(?:es|ed|ing) me\b"
                         r"|\b(?:says?|said|told me|tells me|threaten\w*)(?: that)? (?:nobody|no one|no-one) (?:will|would|'ll|'d) (?:ever )?believe (?:me|you)\b"),
    ("protection-order", r"\b(?:restraining|protection|protective|non-molestation|no-contact) order\b"),
    ("kids-threat", r"\b(?:take|taking) the kids and (?:i'?ll|i will|you'?ll|you will) never (?:see|find)\b"
                    r"|\bnever (?:see|find) (?:the|my|our) (?:kids|children|son|daughter|baby) again\b"),
    ("threatened-with-weapon", r"\bthreaten(?:s|ed|ing)? (?:me|us|her|him|the kids) with (?:a |his |her |the )?(?:knife|gun|weapon|hammer|bat|blade|axe)\b"),
    ("burn-with-me-in-it", r"\b(?:burn|set fire to|torch) (?:the|our|my|this) (?:house|flat|home|car|place)\b.{0,30}?\bwith (?:me|us|the kids|them|her) (?:in|inside)\b"),
    ("find-me-wherever", r"\b(?:find|hunt|track) (?:me|us) (?:down )?(?:wherever|anywhere|no matter where)\b"
                         r"|\bif i (?:ever )?(?:leave|left|go|run)\b.{0,40}?\b(?:he|she|they)(?:'ll|'d| will| would)\b.{0,20}?\b(?:find|kill|hurt|come after|track) (?:me|us)\b"),
    ("our-secret", r"\bforc(?:es|ed|ing) me to do things\b|\b(?:it'?s|it is|is) our (?:little )?secret(?= ?(?:[.,!?;|]|$|and\b))"),
    ("find-my-body", r"\b(?:nobody|no one|no-one) (?:would|will|'d|'ll) (?:ever )?find (?:my|your|the|our) bod(?:y|ies)\b"),
    ("injuries", r"\b(?:gave|give|gives|left) (?:me|her) (?:with )?(?:a )?(?:black eyes?|bruises|broken \w+)\b"
                 r"|\b(?:she|he) has bruises\b|\bhid(?:e|ing)? (?:the |my |her )?bruises\b"),
)
