package gen

// Reference data the records are drawn from. Values are realistic on purpose: names with
// apostrophes, hyphens and accents, LOINC names and ICD-10 descriptions with commas, and
// ZIP codes with leading zeros, because that is what trips parsers in real exports.

var firstNames = []string{
	"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
	"Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
	"Sarah", "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty",
	"Anthony", "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul",
	"Emily", "Andrew", "Donna", "Joshua", "Michelle", "José", "María", "Luis", "Ana", "Wei",
	"Mei", "Nguyen", "Thi", "Mohammed", "Fatima", "Aaliyah", "DeShawn", "Zoë", "Renée",
	"Siobhan", "Jean-Luc", "Mary Ann", "Ji-woo", "Olu", "Priya",
}

var lastNames = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
	"Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
	"Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
	"Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
	"O'Brien", "O'Neil", "D'Angelo", "Smith-Jones", "García", "Núñez", "de la Cruz",
	"Van Der Berg", "Nguyen", "Tran", "Kim", "Patel", "Shah", "Chen", "Wang", "Okafor",
	"Kowalski", "Müller", "Schmidt", "Ivanov", "Cohen", "Murphy", "Kelly", "St. John", "MacDonald",
}

var suffixes = []string{"Jr.", "Sr.", "II", "III"}

type place struct {
	city, state, zip3 string
}

var places = []place{
	{"San Francisco", "CA", "941"}, {"Oakland", "CA", "946"}, {"Fresno", "CA", "937"},
	{"Sacramento", "CA", "958"}, {"Los Angeles", "CA", "900"}, {"Phoenix", "AZ", "850"},
	{"Houston", "TX", "770"}, {"Dallas", "TX", "752"}, {"Austin", "TX", "787"},
	{"Chicago", "IL", "606"}, {"Boston", "MA", "021"}, {"Newark", "NJ", "071"},
	{"Hartford", "CT", "061"}, {"Portland", "ME", "041"}, {"Denver", "CO", "802"},
	{"Seattle", "WA", "981"}, {"Portland", "OR", "972"}, {"Atlanta", "GA", "303"},
	{"Miami", "FL", "331"}, {"Columbus", "OH", "432"}, {"Detroit", "MI", "482"},
	{"Minneapolis", "MN", "554"}, {"Winston-Salem", "NC", "271"}, {"Coeur d'Alene", "ID", "838"},
}

var streets = []string{
	"Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Pine St", "Elm St", "Washington Blvd",
	"Lake Shore Dr", "Mission St", "Market St", "Martin Luther King Jr Way", "1st Ave",
	"Park Pl", "Sunset Blvd", "Broadway", "Highland Rd",
}

var insurers = []string{
	"Medicare", "Medicaid", "Blue Cross Blue Shield", "Aetna", "UnitedHealthcare", "Cigna",
	"Kaiser Permanente", "Humana", "Self-pay", "Tricare",
}

type diagnosis struct{ code, desc string }

var diagnoses = []diagnosis{
	{"I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"},
	{"J18.9", "Pneumonia, unspecified organism"},
	{"I50.9", "Heart failure, unspecified"},
	{"A41.9", "Sepsis, unspecified organism"},
	{"J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"},
	{"N39.0", "Urinary tract infection, site not specified"},
	{"E11.65", "Type 2 diabetes mellitus with hyperglycemia"},
	{"S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"},
	{"I63.9", "Cerebral infarction, unspecified"},
	{"K35.80", "Unspecified acute appendicitis"},
	{"R07.9", "Chest pain, unspecified"},
	{"U07.1", "COVID-19"},
	{"J45.901", "Unspecified asthma with (acute) exacerbation"},
	{"N17.9", "Acute kidney failure, unspecified"},
	{"K92.2", "Gastrointestinal hemorrhage, unspecified"},
	{"R55", "Syncope and collapse"},
	{"I48.91", "Unspecified atrial fibrillation"},
	{"O80", "Encounter for full-term uncomplicated delivery"},
	{"M54.50", "Low back pain, unspecified"},
	{"F32.A", "Depression, unspecified"},
	{"L03.115", "Cellulitis of right lower limb"},
	{"R50.9", "Fever, unspecified"},
}

var admitSources = []string{"Emergency", "Physician referral", "Transfer from hospital", "Transfer from SNF", "Clinic", "Court/Law enforcement"}

var dispositions = []string{"Home", "Home with home health", "Skilled nursing facility", "Rehab", "Left against medical advice", "Expired", "Transferred to another hospital"}

// labTest is one LOINC-coded test. Quantitative tests draw values from a normal
// distribution around mean; qualitative ones pick from answers.
type labTest struct {
	code, name, unit string
	low, high        float64
	mean, sd         float64
	prec             int
	answers          []string
}

var labTests = map[string]labTest{
	"2951-2":  {code: "2951-2", name: "Sodium [Moles/volume] in Serum or Plasma", unit: "mmol/L", low: 136, high: 145, mean: 139, sd: 3.5},
	"2823-3":  {code: "2823-3", name: "Potassium [Moles/volume] in Serum or Plasma", unit: "mmol/L", low: 3.5, high: 5.1, mean: 4.2, sd: 0.5, prec: 1},
	"2075-0":  {code: "2075-0", name: "Chloride [Moles/volume] in Serum or Plasma", unit: "mmol/L", low: 98, high: 107, mean: 102, sd: 3.5},
	"2028-9":  {code: "2028-9", name: "Carbon dioxide, total [Moles/volume] in Serum or Plasma", unit: "mmol/L", low: 22, high: 29, mean: 25, sd: 3},
	"3094-0":  {code: "3094-0", name: "Urea nitrogen [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 7, high: 20, mean: 15, sd: 7},
	"2160-0":  {code: "2160-0", name: "Creatinine [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 0.6, high: 1.3, mean: 1.0, sd: 0.35, prec: 2},
	"2345-7":  {code: "2345-7", name: "Glucose [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 70, high: 99, mean: 105, sd: 30},
	"17861-6": {code: "17861-6", name: "Calcium [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 8.6, high: 10.3, mean: 9.4, sd: 0.6, prec: 1},
	"6690-2":  {code: "6690-2", name: "Leukocytes [#/volume] in Blood by Automated count", unit: "10*3/uL", low: 4.5, high: 11, mean: 8, sd: 3, prec: 1},
	"789-8":   {code: "789-8", name: "Erythrocytes [#/volume] in Blood by Automated count", unit: "10*6/uL", low: 4.2, high: 5.9, mean: 4.8, sd: 0.6, prec: 2},
	"718-7":   {code: "718-7", name: "Hemoglobin [Mass/volume] in Blood", unit: "g/dL", low: 12, high: 17.5, mean: 13.8, sd: 1.8, prec: 1},
	"4544-3":  {code: "4544-3", name: "Hematocrit [Volume Fraction] of Blood by Automated count", unit: "%", low: 36, high: 50, mean: 42, sd: 5, prec: 1},
	"777-3":   {code: "777-3", name: "Platelets [#/volume] in Blood by Automated count", unit: "10*3/uL", low: 150, high: 400, mean: 250, sd: 70},
	"4548-4":  {code: "4548-4", name: "Hemoglobin A1c/Hemoglobin.total in Blood", unit: "%", low: 4, high: 5.6, mean: 6.1, sd: 1.2, prec: 1},
	"2093-3":  {code: "2093-3", name: "Cholesterol [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 0, high: 200, mean: 190, sd: 35},
	"2571-8":  {code: "2571-8", name: "Triglyceride [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 0, high: 150, mean: 140, sd: 60},
	"2085-9":  {code: "2085-9", name: "Cholesterol in HDL [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 40, high: 60, mean: 52, sd: 12},
	"13457-7": {code: "13457-7", name: "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", unit: "mg/dL", low: 0, high: 100, mean: 110, sd: 30},
	"1742-6":  {code: "1742-6", name: "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", unit: "U/L", low: 7, high: 56, mean: 30, sd: 18},
	"1920-8":  {code: "1920-8", name: "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", unit: "U/L", low: 10, high: 40, mean: 28, sd: 15},
	"6768-6":  {code: "6768-6", name: "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", unit: "U/L", low: 44, high: 147, mean: 90, sd: 35},
	"1975-2":  {code: "1975-2", name: "Bilirubin.total [Mass/volume] in Serum or Plasma", unit: "mg/dL", low: 0.1, high: 1.2, mean: 0.8, sd: 0.5, prec: 1},
	"10839-9": {code: "10839-9", name: "Troponin I.cardiac [Mass/volume] in Serum or Plasma", unit: "ng/mL", low: 0, high: 0.04, mean: 0.03, sd: 0.05, prec: 3},
	"5902-2":  {code: "5902-2", name: "Prothrombin time (PT)", unit: "s", low: 11, high: 13.5, mean: 12.5, sd: 2, prec: 1},
	"6301-6":  {code: "6301-6", name: "INR in Platelet poor plasma by Coagulation assay", unit: "{INR}", low: 0.8, high: 1.1, mean: 1.1, sd: 0.4, prec: 1},
	"2524-7":  {code: "2524-7", name: "Lactate [Moles/volume] in Serum or Plasma", unit: "mmol/L", low: 0.5, high: 2.2, mean: 1.6, sd: 1, prec: 1},
	"33959-8": {code: "33959-8", name: "Procalcitonin [Mass/volume] in Serum or Plasma", unit: "ng/mL", low: 0, high: 0.5, mean: 0.3, sd: 0.6, prec: 2},
	"3016-3":  {code: "3016-3", name: "Thyrotropin [Units/volume] in Serum or Plasma", unit: "m[IU]/L", low: 0.4, high: 4, mean: 2.1, sd: 1.5, prec: 2},
	"94500-6": {code: "94500-6", name: "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory specimen by NAA with probe detection", answers: []string{"Not detected", "Not detected", "Not detected", "Detected"}},
	"80382-5": {code: "80382-5", name: "Influenza virus A Ag [Presence] in Upper respiratory specimen by Rapid immunoassay", answers: []string{"Negative", "Negative", "Negative", "Positive"}},
	"5778-6":  {code: "5778-6", name: "Color of Urine", answers: []string{"Yellow", "Yellow", "Straw", "Amber", "Red"}},
}

type labPanel struct {
	name  string
	tests []string
}

var labPanels = []labPanel{
	{"BMP", []string{"2951-2", "2823-3", "2075-0", "2028-9", "3094-0", "2160-0", "2345-7", "17861-6"}},
	{"BMP", []string{"2951-2", "2823-3", "2075-0", "2028-9", "3094-0", "2160-0", "2345-7", "17861-6"}},
	{"CBC", []string{"6690-2", "789-8", "718-7", "4544-3", "777-3"}},
	{"CBC", []string{"6690-2", "789-8", "718-7", "4544-3", "777-3"}},
	{"LIPID", []string{"2093-3", "2571-8", "2085-9", "13457-7"}},
	{"HEPATIC", []string{"1742-6", "1920-8", "6768-6", "1975-2"}},
	{"COAG", []string{"5902-2", "6301-6"}},
	{"A1C", []string{"4548-4"}},
	{"TROP", []string{"10839-9"}},
	{"LACT", []string{"2524-7"}},
	{"PCT", []string{"33959-8"}},
	{"TSH", []string{"3016-3"}},
	{"COVID", []string{"94500-6"}},
	{"FLU", []string{"80382-5"}},
	{"UA", []string{"5778-6"}},
}

var labComments = []string{
	"Specimen hemolyzed, results may be affected",
	`Critical value called to RN "J. Doe" at bedside, read back confirmed`,
	"Verified by repeat analysis",
	`Patient reported "fasting", not confirmed`,
	"Slightly lipemic",
	"Result corrected; see prior report",
}

var performingLabs = []string{"Main Campus Core Lab", "Quest Diagnostics", "LabCorp", "Point-of-care", "Regional Reference Lab, Inc."}

var vitalRecorders = []string{"RN", "LPN", "CNA", "MD", "Device: monitor", "Device: telemetry"}

// Facility kinds with the units their beds are in.
type unitSpec struct {
	name string
	beds int
}

type facilityKind struct {
	name     string
	weight   int
	patients int // size of the patient population referenced by events
	units    []unitSpec
}

var facilityKinds = []facilityKind{
	{"hospital", 25, 40000, []unitSpec{{"ED", 40}, {"ICU", 24}, {"MED-SURG", 120}, {"TELE", 36}, {"PEDS", 20}, {"L&D", 16}, {"ORTHO", 30}}},
	{"urgent_care", 30, 8000, []unitSpec{{"UC-MAIN", 12}, {"UC-OBS", 4}}},
	{"nursing_home", 25, 600, []unitSpec{{"LTC-A", 60}, {"LTC-B", 60}, {"REHAB", 30}, {"MEMORY", 24}}},
	{"emergency", 10, 20000, []unitSpec{{"ED", 30}, {"ED-OBS", 10}}},
	{"critical_care", 10, 5000, []unitSpec{{"MICU", 20}, {"SICU", 16}, {"CCU", 12}}},
}
